"""onnx's own node test cases, run through workbench.onnx_backend (onnxruntime passes 1,560/1,884).

Comparison as onnx does it: assert_allclose(rtol=case.rtol, atol=case.atol) and equal dtypes.
A per-op table of passes is printed (pytest -s, or in the -ra summary of a failure).
"""

from __future__ import annotations

import collections
import warnings

import numpy as np
import onnx
import onnx.numpy_helper
import pytest

import workbench.onnx_backend as backend

REQUIRED = 1560


def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return collect_testcases()


def run_case(case) -> tuple[bool, str]:
    try:
        rep = backend.prepare(case.model, "CPU")
        for inputs, expected in case.data_sets:
            got = rep.run(list(inputs))
            if len(got) < len(expected):
                return False, f"{len(got)} outputs, expected {len(expected)}"
            for a, e in zip(got, expected):
                if isinstance(e, list):
                    if not isinstance(a, list) or len(a) != len(e):
                        return False, "sequence mismatch"
                    for x, y in zip(a, e):
                        _compare(x, y, case)
                elif e is None:
                    if a is not None:
                        return False, "expected an empty optional"
                else:
                    _compare(a, e, case)
        return True, ""
    except AssertionError as exc:
        return False, "mismatch: " + str(exc).strip().splitlines()[0][:120]
    except Exception as exc:  # noqa: BLE001 - a failing case is data for the table
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"


def _compare(actual, expected, case):
    if isinstance(expected, onnx.TensorProto):
        expected = onnx.numpy_helper.to_array(expected)
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != {expected.dtype}"
    if expected.dtype == object:
        assert actual.shape == expected.shape and (actual == expected).all(), "string values differ"
        return
    np.testing.assert_allclose(actual, expected, rtol=case.rtol, atol=case.atol)


@pytest.mark.slow
def test_onnx_node_cases(capsys):
    cases = _cases()
    per_op: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    failures = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            for case in cases:
                ops = sorted({n.op_type for n in case.model.graph.node}) or ["(none)"]
                key = ops[0] if len(ops) == 1 else case.name.split("_")[1]
                ok, why = run_case(case)
                per_op[key][0] += ok
                per_op[key][1] += 1
                if not ok:
                    failures.append((case.name, why))
    passed = sum(p for p, _ in per_op.values())
    lines = [f"{op:32s} {p:4d}/{n:<4d}" for op, (p, n) in sorted(per_op.items())]
    with capsys.disabled():
        print("\nonnx node tests through workbench.onnx_backend, per op (passed/total):")
        print("\n".join(lines))
        print(f"TOTAL {passed}/{len(cases)} passed (required: {REQUIRED})")
    assert passed >= REQUIRED, f"{passed}/{len(cases)} node cases passed; first failures: {failures[:20]}"
