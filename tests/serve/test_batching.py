"""Rows in, rows out (``workbench.serve.batching``), without Ray: which engines batch, how requests
are checked, cut, padded with real rows and handed back exactly their own rows."""

from __future__ import annotations

import numpy as np
import pytest

from tests.serve import engines as E
from workbench.core.numerics import rel_err
from workbench.errors import InputError
from workbench.serve.batching import (
    DEFAULT_MAX_BATCH,
    BatchLayout,
    batch_layout,
    check_request,
    rows_interact,
    run_rows,
    split_rows,
)


@pytest.fixture(scope="module")
def fixed():
    engine = E.dense_fixed(batch=8)
    return engine, engine.create_context(threads=1)


@pytest.fixture(scope="module")
def anybatch():
    engine = E.build(E.dense_model())
    return engine, engine.create_context(threads=1)


class Recording:
    """A context that records every feed dict it runs."""

    def __init__(self, ctx):
        self.ctx, self.runs = ctx, []

    def run(self, feeds):
        self.runs.append({k: np.array(v) for k, v in feeds.items()})
        return self.ctx.run(feeds)


def test_layout_of_each_kind_of_engine(fixed, anybatch):
    lay = batch_layout(fixed[0])
    assert (lay.batched, lay.fixed, lay.min_rows, lay.max_rows) == (True, 8, 8, 8)
    assert [s.shape for s in lay.row_specs] == [["batch", E.WIDTH], ["batch", 1]]
    assert lay.batch_limit() == 8 and lay.batch_limit(20) == 20
    lay = batch_layout(anybatch[0])
    assert (lay.batched, lay.fixed, lay.max_rows) == (True, None, None)
    assert lay.batch_limit() == DEFAULT_MAX_BATCH and lay.padded_rows(3) == 3
    whole = batch_layout(E.build(E.whole_model()))
    assert not whole.batched and "dim 0 differs" in whole.reason and whole.batch_limit() == 1
    with pytest.raises(InputError, match="max_batch"):
        lay.batch_limit(0)


def test_layout_of_an_engine_with_a_batch_range():
    engine = E.build(E.dense_model(), profiles=[{"x": ((2, E.WIDTH), (4, E.WIDTH), (16, E.WIDTH)),
                                                 "s": ((2, 1), (4, 1), (16, 1))}])
    lay = batch_layout(engine)
    assert (lay.batched, lay.min_rows, lay.max_rows, lay.fixed) == (True, 2, 16, None)
    assert lay.batch_limit() == 16 and lay.padded_rows(1) == 2 and lay.padded_rows(9) == 9
    ctx = engine.create_context(threads=1)
    rng = np.random.default_rng(3)
    requests = [check_request(lay, engine.inputs, E.dense_feeds(rng, n)) for n in (1, 5, 13)]
    outs = run_rows(ctx, lay, requests)
    for (feeds, n), out in zip(requests, outs):
        alone = ctx.run({k: np.concatenate([v, v]) for k, v in feeds.items()}) if n == 1 else ctx.run(feeds)
        for name in ("y", "z"):
            assert out[name].shape[0] == n and rel_err(out[name], alone[name][:n]) <= 1e-6


def test_every_request_gets_exactly_its_rows(fixed):
    engine, ctx = fixed
    lay = batch_layout(engine)
    rng = np.random.default_rng(0)
    sizes = [1, 3, 8, 2, 11, 17, 1, 5]  # some larger than the engine's batch, some to pad
    requests = [check_request(lay, engine.inputs, E.dense_feeds(rng, n)) for n in sizes]
    rec = Recording(ctx)
    outs = run_rows(rec, lay, requests)
    assert len(rec.runs) == -(-sum(sizes) // 8)  # the rows of all requests share runs
    for (feeds, n), out in zip(requests, outs):
        want = E.row_by_row(ctx, feeds, 8)
        assert set(out) == {"y", "z"}
        for name in out:
            assert out[name].shape == (n,) + want[name].shape[1:]
            assert rel_err(out[name], want[name]) <= 1e-6, (n, name)
    # each output is its own array: writing one never changes another
    outs[0]["y"][...] = np.nan
    assert np.isfinite(outs[1]["y"]).all()


def test_short_runs_are_padded_with_a_real_row(fixed):
    engine, ctx = fixed
    lay = batch_layout(engine)
    rng = np.random.default_rng(1)
    feeds = E.dense_feeds(rng, 3)
    rec = Recording(ctx)
    run_rows(rec, lay, [check_request(lay, engine.inputs, feeds)])
    (ran,) = rec.runs
    assert ran["x"].shape == (8, E.WIDTH)
    np.testing.assert_array_equal(ran["x"][:3], feeds["x"])
    np.testing.assert_array_equal(ran["x"][3:], np.repeat(feeds["x"][2:3], 5, axis=0))  # never zeros


def test_requests_with_other_free_dims_run_in_groups():
    engine = E.build(E.seq_model())
    ctx = engine.create_context(threads=1)
    lay = batch_layout(engine)
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((n, s)).astype(np.float32) for n, s in ((2, 5), (1, 3), (4, 5), (3, 3))]
    rec = Recording(ctx)
    outs = run_rows(rec, lay, [check_request(lay, engine.inputs, {"x": x}) for x in xs])
    assert sorted(r["x"].shape for r in rec.runs) == [(4, 3), (6, 5)]
    for x, out in zip(xs, outs):
        np.testing.assert_allclose(out["y"], x * 2 + 1, rtol=1e-6)


def test_split_rows_cuts_views():
    x = np.arange(20).reshape(10, 2)
    pieces = split_rows({"x": x}, 10, 4)
    assert [n for _, n in pieces] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([p["x"] for p, _ in pieces]), x)
    assert split_rows({"x": x}, 10, 10)[0][0]["x"] is x


@pytest.mark.parametrize("change, message", [
    (lambda f: {**f, "x": f["x"].astype(np.float64)}, "input 'x' has dtype float64, expected float32"),
    (lambda f: {**f, "x": f["x"][:, :5]}, "input 'x' has shape [3, 5]"),
    (lambda f: {**f, "s": f["s"][:2]}, "input 's' axis 0 (batch) is 2 but it is 3 in input 'x'"),
    (lambda f: {"x": f["x"]}, "missing input 's'"),
    (lambda f: {**f, "t": f["s"]}, "unexpected input 't'"),
    (lambda f: {k: v[:0] for k, v in f.items()}, "the request has no rows"),
    (lambda f: {**f, "x": f["x"][None]}, "input 'x' has rank 3"),
])
def test_bad_requests_are_refused_by_name(fixed, change, message):
    engine, _ = fixed
    feeds = E.dense_feeds(np.random.default_rng(4), 3)
    with pytest.raises(InputError) as info:
        check_request(batch_layout(engine), engine.inputs, change(feeds))
    assert message in str(info.value)


def test_an_engine_that_mixes_rows_is_found():
    engine = E.build(E.mixing_model())
    why = rows_interact(engine.create_context(threads=1), batch_layout(engine))
    assert why and "output 'y' of a row changes when the other rows" in why


def test_independent_rows_pass_the_check(fixed, anybatch):
    for engine, ctx in (fixed, anybatch):
        assert rows_interact(ctx, batch_layout(engine)) is None


def test_an_engine_without_a_batch_runs_each_request_alone():
    engine = E.build(E.whole_model())
    ctx = engine.create_context(threads=1)
    lay = batch_layout(engine)
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((2, E.WIDTH)).astype(np.float32) for _ in range(3)]
    outs = run_rows(ctx, lay, [check_request(lay, engine.inputs, {"x": x}) for x in xs])
    for x, out in zip(xs, outs):
        np.testing.assert_allclose(out["z"], x.sum(keepdims=True), rtol=1e-5)
    with pytest.raises(InputError, match="input 'x' has shape"):
        check_request(lay, engine.inputs, {"x": xs[0][:1]})
    assert isinstance(lay, BatchLayout) and lay.padded_rows(1) == 1
