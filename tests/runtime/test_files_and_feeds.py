"""Special files refused at once, atomic writes, checked .npz reading, feed conversion, byte
budgets, Loop caps and contexts that hold nothing between runs."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from onnx import TensorProto, helper

import workbench as wb
from workbench.core.files import (FileKindError, OutputWriteError, atomic_write, npz_bytes, read_npz,
                                  regular_file)
from workbench.errors import EngineFormatError, InputError, InputTypeError, ModelLoadError, ResourceLimitError


class _Blocked(BaseException):
    pass


@pytest.fixture
def alarm():
    """Fail instead of hanging if anything blocks on a FIFO. The alarm raises a BaseException that no
    ``except OSError`` / ``except Exception`` in the package can turn into an ordinary refusal
    (TimeoutError is an OSError, so a blocked open would have looked like a clean error)."""
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(_Blocked("blocked on a special file")))
    signal.alarm(10)
    yield
    signal.alarm(0)


def _relu_engine(shape=(2, 3)):
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return wb.build(wb.load_onnx(model), wb.BuilderConfig(device="cpu"))


@pytest.mark.parametrize("kind", ["fifo", "dir", "loop", "device"])
def test_special_files_refused_at_once(tmp_path, alarm, kind):
    path = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    elif kind == "loop":
        os.symlink(path, path)
    else:
        path = "/dev/zero"
    with pytest.raises(EngineFormatError) as e:
        wb.Engine.load(path)
    assert "\n" not in str(e.value)
    with pytest.raises(ModelLoadError):
        wb.load_onnx(str(path))
    with pytest.raises(FileKindError):
        read_npz(path, max_bytes=1 << 20)
    with pytest.raises(FileKindError):
        regular_file(path, "calibration data")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "out.npz"
    dest.write_bytes(b"old")

    def fail(f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputWriteError, match="out.npz"):
        atomic_write(dest, fail)
    assert dest.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["out.npz"]
    with pytest.raises(OutputWriteError, match="FIFO"):
        os.mkfifo(tmp_path / "pipe")
        atomic_write(tmp_path / "pipe", lambda f: f.write(b"x"))


def test_file_size_limit_leaves_no_partial_engine(tmp_path):
    code = ("import resource, sys, numpy as np\n"
            "from workbench.core.files import atomic_write, npz_bytes\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
            "try:\n"
            f"    atomic_write({str(tmp_path / 'big.npz')!r}, npz_bytes({{'a': np.zeros(100000)}}))\n"
            "except Exception as e:\n"
            "    print(type(e).__name__, e); sys.exit(2)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "OutputWriteError" in r.stdout and "big.npz" in r.stdout
    assert os.listdir(tmp_path) == []


def test_two_writers_leave_one_whole_file(tmp_path):
    dest = tmp_path / "o.npz"
    code = ("import sys, numpy as np\nfrom workbench.core.files import atomic_write, npz_bytes\n"
            "v = float(sys.argv[1])\n"
            f"for _ in range(20): atomic_write({str(dest)!r}, npz_bytes({{'a': np.full(200000, v)}}))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(v)]) for v in (1, 2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    a = read_npz(dest, max_bytes=1 << 24)["a"]
    assert a.shape == (200000,) and len(set(a.tolist())) == 1
    assert os.listdir(tmp_path) == ["o.npz"]


def test_npz_members_checked_before_decompression(tmp_path):
    path = tmp_path / "f.npz"
    np.savez_compressed(path, x=np.ones((2, 3), np.float32), junk=np.zeros((4000, 1000)))
    tracemalloc.start()
    seen = {}

    def check(members):
        seen.update({k: (m.shape, m.dtype) for k, m in members.items()})
        extra = set(members) - {"x"}
        if extra:
            raise InputError(f"unexpected input {sorted(extra)[0]!r}")

    with pytest.raises(InputError, match="junk"):
        read_npz(path, max_bytes=1 << 30, check=check)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seen["junk"] == ((4000, 1000), np.dtype(np.float64))
    assert peak < 4_000_000  # the 32 MB member was never decompressed
    with pytest.raises(ResourceLimitError, match="memory budget"):
        read_npz(path, max_bytes=1 << 20)
    np.save(tmp_path / "o.npy", np.array([object()], dtype=object), allow_pickle=True)
    import zipfile
    with zipfile.ZipFile(tmp_path / "obj.npz", "w") as z:
        z.write(tmp_path / "o.npy", "o.npy")
    with pytest.raises(InputError, match="Python objects"):
        read_npz(tmp_path / "obj.npz", max_bytes=1 << 20)
    atomic_write(tmp_path / "w.npz", npz_bytes({"x": np.arange(3)}))
    assert read_npz(tmp_path / "w.npz", max_bytes=100)["x"].tolist() == [0, 1, 2]


class Spy(np.ndarray):
    calls = 0

    def __array_ufunc__(self, *args, **kwargs):
        Spy.calls += 1
        raise RuntimeError("subclass code ran")

    def __array_function__(self, *args, **kwargs):
        Spy.calls += 1
        raise RuntimeError("subclass code ran")


def test_feed_subclass_code_never_runs():
    ctx = _relu_engine().create_context()
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32).view(Spy)
    out = ctx.run({"x": x})
    assert Spy.calls == 0 and type(out["y"]) is np.ndarray
    assert out["y"].tolist() == [[0, 2, 0], [4, 0, 6]]


def test_masked_and_object_feeds_refused():
    ctx = _relu_engine().create_context()
    with pytest.raises(InputTypeError, match="masked"):
        ctx.run({"x": np.ma.masked_array(np.ones((2, 3), np.float32), mask=True)})
    with pytest.raises(InputTypeError):
        ctx.run({"x": np.empty((2, 3), dtype=object)})


def test_feed_over_the_budget_refused_before_running():
    engine = _relu_engine(shape=("n", 8))
    ctx = engine.create_context(memory_budget=1 << 20)
    huge = np.broadcast_to(np.float32(1), (1 << 20, 8))  # a 32 MiB view of 4 bytes
    with pytest.raises(ResourceLimitError, match="input 'x'"):
        ctx.run({"x": huge})
    with pytest.raises(ResourceLimitError):
        engine.create_context(memory_budget=0)


def test_profile_without_feeds_refuses_inputs_over_the_budget():
    from workbench.runtime.feeds import random_feeds
    from workbench.core.plan import TensorSpec
    with pytest.raises(ResourceLimitError, match="memory budget"):
        random_feeds([TensorSpec("x", "float32", [2**30, 8])])


@pytest.mark.parametrize("with_subgraph", [False, True])
def test_dropping_a_context_frees_its_tensors_without_gc(with_subgraph):
    n = 1_000_000
    if with_subgraph:  # a Loop: its kernel context gets a subgraph runner closing over the run's scope
        engine = wb.build(wb.load_onnx(_loop_model(0, size=n)), wb.BuilderConfig(device="cpu"))
        feeds = {"x": np.ones(n, np.float32), "trip": np.array(3, np.int64), "cond": np.array(True)}
    else:
        engine = _relu_engine(shape=(1000, 1000))
        feeds = {"x": np.ones((1000, 1000), np.float32)}
    gc.disable()
    try:
        tracemalloc.start()
        ctx = engine.create_context()
        out = ctx.run(feeds)
        del ctx, out
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    finally:
        gc.enable()
    assert after < 1_000_000  # the 4 MB output and intermediates went with the context


def _loop_model(trip, size=1):
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v", "one"], ["v2"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("v", TensorProto.FLOAT, [size])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v2", TensorProto.FLOAT, [size])],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])])
    g = helper.make_graph([helper.make_node("Loop", ["trip", "cond", "x"], ["y"], body=body)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size]),
                           helper.make_tensor_value_info("trip", TensorProto.INT64, []),
                           helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_loop_iteration_cap_gives_a_clear_error():
    engine = wb.build(wb.load_onnx(_loop_model(0)), wb.BuilderConfig(device="cpu"))
    ctx = engine.create_context(max_loop_iterations=100)
    feeds = {"x": np.zeros(1, np.float32), "trip": np.array(2**62, np.int64), "cond": np.array(True)}
    with pytest.raises(ResourceLimitError, match="more than 100 iterations"):
        ctx.run(feeds)
    feeds["trip"] = np.array(50, np.int64)
    assert ctx.run(feeds)["y"].tolist() == [50.0]
    with pytest.raises(ResourceLimitError):
        engine.create_context(max_loop_iterations=0)
