"""Engine.load of a path that is no file raises EngineFormatError naming the path."""

from __future__ import annotations

import pytest

import workbench as wb
from workbench.errors import EngineFormatError


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_engine_load_of_a_bad_path_is_an_engine_error(tmp_path, kind):
    path = tmp_path / "e.wbe"
    if kind == "directory":
        path.mkdir()
    with pytest.raises(EngineFormatError, match="e.wbe"):
        wb.Engine.load(path)
