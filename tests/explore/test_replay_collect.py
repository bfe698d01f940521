"""``replay_profile``'s bookkeeping without a GPU: a stand-in for cupti-python's API that behaves as
CUPTI does for the calls the collector makes (resource callbacks when graph nodes are created and
cloned, activity records of replays handed over on a flush, external correlation records for
launches made while an id is pushed), and a stand-in context whose layers launch one or two
kernels each. The GPU tests (test_replay_gpu.py) run the same code on the real thing."""

from __future__ import annotations

import enum
import itertools
import sys
import threading
import types

import pytest

from workbench.runtime import cupti as collector
from workbench.runtime.gpu import graphs
from workbench.runtime.profile import replay_table


class AK(enum.IntEnum):
    CONCURRENT_KERNEL = 1
    KERNEL = 2
    MEMCPY = 3
    MEMSET = 4
    EXTERNAL_CORRELATION = 5
    DRIVER = 6
    RUNTIME = 7


class FakeCupti:
    """The part of ``cupti.cupti`` the collector uses; records are plain namespaces."""

    ActivityKind = AK
    ExternalCorrelationKind = enum.IntEnum("EK", {"CUSTOM0": 1})
    CallbackDomain = enum.IntEnum("CD", {"RESOURCE": 3})
    CallbackIdResource = enum.IntEnum("CR", {"GRAPHNODE_CREATED": 1, "GRAPHNODE_CLONED": 2})

    def __init__(self):
        self.clock = itertools.count(1_000, 10)
        self.enabled: set = set()
        self.stack: list = []
        self.pending: list = []
        self.descriptors: dict = {}
        self.callback = self.completed = None
        self.subscribed = 0
        self.GraphData = types.SimpleNamespace(from_ptr=lambda p: self.descriptors[p])
        self.ResourceData = types.SimpleNamespace(from_ptr=lambda p: p)

    def activity_register_callbacks(self, requested, completed):
        self.completed = completed

    def subscribe(self, callback, userdata):
        self.callback = callback
        self.subscribed += 1
        return 7

    def unsubscribe(self, handle):
        self.subscribed -= 1

    def enable_callback(self, *args):
        pass

    def activity_enable(self, kind):
        self.enabled.add(kind)

    def activity_disable(self, kind):
        self.enabled.discard(kind)

    def get_timestamp(self):
        return next(self.clock)

    def activity_push_external_correlation_id(self, kind, value):
        self.stack.append(value)

    def activity_pop_external_correlation_id(self, kind):
        return self.stack.pop()

    def get_graph_node_id(self, node):
        return node

    def activity_flush_all(self, flag):
        done, self.pending = self.pending, []
        self.completed(done)

    # what the driver does -----------------------------------------------------------------------
    def node_event(self, cbid, node, original=0):
        key = len(self.descriptors) + 1
        self.descriptors[key] = types.SimpleNamespace(node=node, original_node=original)
        self.callback(None, self.CallbackDomain.RESOURCE, cbid, types.SimpleNamespace(resource_descriptor=key))

    def kernel(self, name, node=0, correlation=0):
        if AK.CONCURRENT_KERNEL not in self.enabled:
            return
        t = next(self.clock)
        self.pending.append(types.SimpleNamespace(kind=AK.CONCURRENT_KERNEL, name=name, start=t, end=t + 5,
                                                  graph_node_id=node, correlation_id=correlation, stream_id=1))
        if self.stack and AK.EXTERNAL_CORRELATION in self.enabled:
            self.pending.append(types.SimpleNamespace(kind=AK.EXTERNAL_CORRELATION, correlation_id=correlation,
                                                      external_kind=1, external_id=self.stack[-1]))


class FakeGraph:
    def __init__(self, api, nodes):
        self.api, self.nodes = api, nodes

    def launch(self, stream):
        for node, name in self.nodes:
            self.api.kernel(name, node=node + 10_000)  # the executable graph's clone of the node


class FakeContext:
    """Layer i launches 1 + i % 2 kernels; during a capture they become graph nodes."""

    class Stream:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def synchronize(self):
            pass

    def __init__(self, api, engine, eager=()):
        self.api, self.engine = api, engine
        self.kernels = [types.SimpleNamespace(capturable=True) for _ in engine.layers]
        self._eager_only = set(eager)
        self._lock = threading.Lock()
        self.stream = self.Stream()
        self.cuda_graph, self.debug, self.graph_error, self._segments = True, False, None, ["captured"]
        self.capturing: list | None = None
        self.node_ids = itertools.count(1)
        self.correlation = itertools.count(100)

    def _checked(self, feeds):
        return feeds

    def _load_inputs(self, feeds):
        return False, False

    def _execute(self):
        pass

    def _run_layer(self, i, stream=None):
        for k in range(1 + i % 2):
            if self.capturing is not None:
                node = next(self.node_ids)
                self.capturing.append((node, f"k{i}_{k}"))
                self.api.node_event(self.api.CallbackIdResource.GRAPHNODE_CREATED, node)
            else:
                self.api.kernel(f"e{i}_{k}", correlation=next(self.correlation))


@pytest.fixture()
def fake(monkeypatch):
    api = FakeCupti()
    module = types.ModuleType("cupti")
    module.cupti = api
    monkeypatch.setitem(sys.modules, "cupti", module)
    monkeypatch.setattr(collector._Collector, "registered", False)
    monkeypatch.setattr("workbench.kernels.cuda.device.cupy",
                        lambda: types.SimpleNamespace(cuda=types.SimpleNamespace(
                            get_current_stream=FakeContext.Stream)))

    def capture_segments(kernels, run_layer, stream, pools, skip=frozenset(), eager_only=frozenset()):
        segments = []
        for kind, idx in graphs.split(kernels, skip, eager_only):
            if kind == "eager":
                segments.append(("eager", idx))
                continue
            owner = fake.ctx
            owner.capturing = []
            for i in idx:
                run_layer(i)
            nodes, owner.capturing = owner.capturing, None
            for node, _ in nodes:  # instantiation clones every node
                api.node_event(api.CallbackIdResource.GRAPHNODE_CLONED, node + 10_000, node)
            segments.append(("graph", FakeGraph(api, nodes)))
        return segments

    fake = types.SimpleNamespace(api=api, ctx=None)
    monkeypatch.setattr(graphs, "capture_segments", capture_segments)
    return fake


def test_kernels_map_to_layers_through_graph_nodes_and_correlation(fake, fp32):
    ctx = fake.ctx = FakeContext(fake.api, fp32, eager={3})
    trace = collector.replay_profile(ctx, {}, runs=4)
    assert trace.runs == 4 and trace.eager_layers == [3]
    assert all(u == 0 for u in trace.unattributed_ms)
    # every layer got its kernels in every run: 5 ns each, 1 + i % 2 of them
    for i, samples in enumerate(trace.layers):
        assert samples == [pytest.approx((1 + i % 2) * 5e-6)] * 4, i
    names = [(k["layer"], k["name"]) for k in trace.kernel_stats]
    assert (3, "e3_0") in names and (3, "e3_1") in names  # the eager layer's own launches
    assert (2, "k2_0") in names
    for r in range(4):
        total = sum(layer[r] for layer in trace.layers) + trace.gaps_ms[r]
        assert total == pytest.approx(trace.span_ms[r])
    df = replay_table(fp32, trace, [1.0] * 4)
    assert list(df["kernels"][:-1]) == [1 + i % 2 for i in range(len(fp32.layers))]
    assert df.attrs["eager_layers"] == [fp32.layers[3].name]
    assert fake.api.enabled == set() and fake.api.subscribed == 0  # everything switched off again


def test_no_graph_nodes_seen_means_cupti_is_unusable(fake, fp32, monkeypatch):
    ctx = fake.ctx = FakeContext(fake.api, fp32)
    monkeypatch.setattr(fake.api, "node_event", lambda *a, **k: None)  # callbacks never arrive
    with pytest.raises(collector.CuptiUnavailable, match="no graph nodes"):
        collector.replay_profile(ctx, {}, runs=2)
    assert fake.api.enabled == set() and fake.api.subscribed == 0


def test_a_second_subscriber_is_reported(fake, fp32, monkeypatch):
    ctx = fake.ctx = FakeContext(fake.api, fp32)

    def refuse(callback, userdata):
        raise RuntimeError("CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED")

    monkeypatch.setattr(fake.api, "subscribe", refuse)
    with pytest.raises(collector.CuptiUnavailable, match="MULTIPLE_SUBSCRIBERS"):
        collector.replay_profile(ctx, {}, runs=2)


def test_missing_cupti_python_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupti", None)
    with pytest.raises(collector.CuptiUnavailable) as info:
        collector.load_cupti()
    assert "CUPTI is not available" in str(info.value) and "\n" not in str(info.value)
