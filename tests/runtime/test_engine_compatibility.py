"""An engine this machine cannot run (unknown backend; a GPU engine where CuPy is missing) is refused with
a message that says to rebuild."""

from __future__ import annotations

import pytest
from onnx import helper

import workbench as wb
from tests.support.models import build_cpu, one_input_model
from workbench.errors import EngineCompatibilityError


def test_engine_for_an_unknown_backend_is_refused(tmp_path):
    engine = build_cpu(one_input_model([helper.make_node("Relu", ["x"], ["y"])]))
    engine.target["backend"] = "tpu"
    engine.save(tmp_path / "e.wbe")
    with pytest.raises(EngineCompatibilityError, match="'tpu'.*rebuild"):
        wb.Engine.load(tmp_path / "e.wbe").create_context()


def test_gpu_engine_where_cupy_is_missing_is_refused(tmp_path):
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed here")
    except ImportError:
        pass
    engine = build_cpu(one_input_model([helper.make_node("Relu", ["x"], ["y"])]))
    engine.target["backend"], engine.target["arch"] = "gpu", "sm_90"
    engine.save(tmp_path / "e.wbe")
    with pytest.raises(EngineCompatibilityError, match="rebuild"):
        wb.Engine.load(tmp_path / "e.wbe").create_context()


def test_cpu_threads_for_a_gpu_engine_is_a_one_line_error(tmp_path):
    """BLAS threads mean nothing to a GPU engine: asking for them is refused (the CLI exits 2), whether
    or not this machine has a GPU."""
    from workbench.errors import WorkbenchError

    engine = build_cpu(one_input_model([helper.make_node("Relu", ["x"], ["y"])]))
    engine.target["backend"], engine.target["arch"] = "gpu", "sm_90"
    with pytest.raises(WorkbenchError, match="threads=.*GPU") as info:
        engine.create_context(threads=2)
    assert "\n" not in str(info.value)
