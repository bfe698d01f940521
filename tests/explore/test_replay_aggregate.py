"""The replay profile's arithmetic, without a GPU: CUPTI-like records of several runs are split by run,
mapped to layers through their graph nodes (or the external correlation of eager layers), laid on
one time line (overlaps counted once) and tabulated so that layers + gaps = the replay's span."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.runtime.cupti import Record, aggregate, busy_times, split_runs
from workbench.runtime.profile import GAPS, UNATTRIBUTED, format_profile, kernel_table, replay_table


def synthetic_records(n_layers: int, runs: int = 3, seed: int = 0, eager=(), overlap_layer=None):
    """Records of ``runs`` replays: layer i launches 1 + i % 2 kernels from graph nodes 100 + 10 i + k
    (eager layers: correlation ids 5000 + i instead), with idle gaps between them; the first kernel of
    ``overlap_layer`` starts before the previous kernel ends. Returns (records, windows, node_layer,
    corr_layer)."""
    rng = random.Random(seed)
    records, windows = [], []
    node_layer = {100 + 10 * i + k: i for i in range(n_layers) for k in range(2) if i not in eager}
    corr_layer = {5000 + i: i for i in eager}
    t = 1_000_000
    for _ in range(runs):
        t0 = t
        t += 5_000  # the launch: host timestamp before the first kernel starts
        prev_end = t
        for i in range(n_layers):
            for k in range(1 + i % 2):
                start = prev_end - 400 if i == overlap_layer and k == 0 else t
                dur = rng.randint(1_000, 20_000)
                node = 0 if i in eager else 100 + 10 * i + k
                records.append(Record("kernel", f"k{i}_{k}", start, start + dur, node=node,
                                      correlation=5000 + i if i in eager else 1, stream=7))
                prev_end = start + dur
                t = prev_end + rng.randint(0, 3_000)
        t += 10_000  # the synchronize
        windows.append((t0, t))
        t += 50_000
    return records, windows, node_layer, corr_layer


def replay_df(engine, **kw):
    records, windows, node_layer, corr_layer = synthetic_records(len(engine.layers), **kw)
    trace = aggregate(records, windows, node_layer, corr_layer, len(engine.layers))
    return replay_table(engine, trace, [trace.span_ms[0] * 1.01] * trace.runs)


def test_each_run_adds_up_to_its_span():
    records, windows, node_layer, corr_layer = synthetic_records(6, runs=4, eager={2}, overlap_layer=3)
    trace = aggregate(records, windows, node_layer, corr_layer, 6)
    assert trace.runs == 4 and trace.records == len(records)
    for r in range(4):
        total = sum(layer[r] for layer in trace.layers) + trace.gaps_ms[r] + trace.unattributed_ms[r]
        assert total == pytest.approx(trace.span_ms[r], rel=1e-12)
    assert all(u == 0 for u in trace.unattributed_ms)
    assert all(g > 0 for g in trace.gaps_ms)
    # the eager layer's kernels are mapped through their correlation ids
    assert all(ms > 0 for ms in trace.layers[2])
    # per layer kernels in order, with their medians
    stats = [(k["layer"], k["index"], k["name"]) for k in trace.kernel_stats]
    assert stats == [(i, k, f"k{i}_{k}") for i in range(6) for k in range(1 + i % 2)]


def test_overlap_is_counted_once():
    recs = [Record("kernel", "a", 0, 100), Record("kernel", "b", 60, 150), Record("kernel", "c", 200, 210)]
    timed, span, gaps = busy_times(recs)
    assert [d for _, _, d in timed] == [100, 50, 10] and span == 210 and gaps == 50
    inside = [Record("kernel", "a", 0, 100), Record("kernel", "b", 10, 20)]
    timed, span, gaps = busy_times(inside)
    assert [d for _, _, d in timed] == [100, 0] and span == 100 and gaps == 0


def test_records_outside_the_runs_and_unknown_nodes():
    recs = [Record("kernel", "warm-up", 10, 20, node=1), Record("kernel", "a", 110, 120, node=1),
            Record("kernel", "lost", 130, 140, node=99), Record("kernel", "b", 210, 230, node=1)]
    runs = split_runs(recs, [(100, 200), (200, 300)])
    assert [[r.name for r in run] for run in runs] == [["a", "lost"], ["b"]]
    trace = aggregate(recs, [(100, 200), (200, 300)], {1: 0}, {}, 1)
    assert trace.unattributed_ms == [pytest.approx(10e-6), 0.0]
    assert trace.layers[0] == [pytest.approx(10e-6), pytest.approx(20e-6)]


def test_graph_nodes_win_over_correlation_ids():
    # a graph's kernels share the graph launch's correlation id; an eager launch has no node
    recs = [Record("kernel", "a", 110, 120, node=55, correlation=9), Record("kernel", "b", 125, 130, correlation=9)]
    trace = aggregate(recs, [(100, 200)], {55: 0}, {9: 1}, 2)
    assert trace.layers == [[pytest.approx(1e-5)], [pytest.approx(5e-6)]]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 3_000), st.integers(0, 3)), min_size=1,
                max_size=40))
def test_busy_plus_gaps_is_the_span_for_any_records(items):
    recs = [Record("kernel", "k", s, s + d, node=n + 1) for s, d, n in items]
    trace = aggregate(recs, [(0, 20_000)], {1: 0, 2: 1, 3: 2}, {}, 3)
    total = sum(layer[0] for layer in trace.layers) + trace.gaps_ms[0] + trace.unattributed_ms[0]
    assert total == pytest.approx(trace.span_ms[0], rel=1e-9, abs=1e-12)
    assert trace.span_ms[0] * 1e6 == pytest.approx(max(s + d for s, d, _ in items) - min(s for s, _, _ in items))


def test_replay_table_rows_add_up_and_print(fp32):
    df = replay_df(fp32, eager={1})
    assert list(df["layer"][:-1]) == [l.name for l in fp32.layers] and df["layer"].iloc[-1] == GAPS
    assert UNATTRIBUTED not in set(df["layer"])
    a = df.attrs
    assert a["mode"] == "replay" and a["eager_layers"] == []  # set by the collector, not by aggregate
    assert a["sum_of_layers_ms"] == pytest.approx(df["median_ms"].sum())
    assert a["gaps_ms"] == pytest.approx(df.set_index("layer").loc[GAPS, "median_ms"])
    assert list(df["kernels"][:-1]) == [1 + i % 2 for i in range(len(fp32.layers))]
    assert df["pct"].sum() == pytest.approx(100.0)
    kt = kernel_table(df)
    assert len(kt) == df["kernels"].sum() and set(kt["layer"]) == {l.name for l in fp32.layers}
    text = format_profile(df)
    assert "replay span" in text and "gaps" in text
