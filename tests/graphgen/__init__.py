"""Generated ONNX graphs for property tests: real-model building blocks and their near-misses.

    from tests.graphgen import models, check_case
    @given(models("attention"))
    def test(case): check_case(case)
"""

from .check import check_case, compare, run_ort
from .core import Case, FixedChooser, GraphBuilder
from .models import KINDS, fixed_case, generate, models, replay

__all__ = [
           "KINDS",
           "Case",
           "FixedChooser",
           "GraphBuilder",
           "check_case",
           "compare",
           "fixed_case",
           "generate",
           "models",
           "replay",
           "run_ort",
]
