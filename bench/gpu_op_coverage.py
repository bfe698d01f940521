"""Which ONNX operators a GPU engine can run: onnx's own node test cases, built for the GPU in fp32.

For every op, every node test case whose inputs are numeric tensors is built with
``BuilderConfig(device="gpu", precision="fp32")`` and run; the outputs are compared with the
case's expected outputs exactly as the CPU node tests do (rtol / atol of the case, equal dtypes).
Prints one row per op (cases passed, the tactics the engines chose, or why the build refused) and a
summary line. A report, not a test: run it on a GPU machine.

    python3 bench/gpu_op_coverage.py [--max-per-op N] [--ops Relu,Conv,...]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def cases_by_op(max_per_op: int, only: set[str] | None):
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    groups = collections.defaultdict(list)
    for case in cases:
        ops = {n.op_type for n in case.model.graph.node}
        if len(ops) != 1:
            continue  # expanded / multi-node cases test the composition, not the op
        op = ops.pop()
        if only and op not in only:
            continue
        if len(groups[op]) < max_per_op:
            groups[op].append(case)
    return groups


def run_case(case) -> tuple[bool, str, list[str]]:
    import cupy as cp

    import workbench as wb
    from workbench.frontends.onnx.loader import network_from_proto

    inputs, expected = case.data_sets[0]
    # onnx's data sets hold NumPy scalars for 0-d tensors
    inputs = [np.asarray(x) if isinstance(x, np.generic) else x for x in inputs]
    expected = [np.asarray(x) if isinstance(x, np.generic) else x for x in expected]
    if any(not isinstance(x, np.ndarray) or x.dtype == object for x in list(inputs) + list(expected)):
        return False, "non-tensor or string data (not a GPU case)", []
    names = [i.name for i in case.model.graph.input if i.name not in {t.name for t in case.model.graph.initializer}]
    feeds = dict(zip(names, inputs))
    try:
        net = network_from_proto(case.model)
        engine = wb.build(net, wb.BuilderConfig(device="gpu", precision="fp32",
                                                shapes={k: v.shape for k, v in feeds.items()}))
    except Exception as exc:  # noqa: BLE001 - the reason is the report
        return False, f"build: {str(exc).splitlines()[0][:160]}", []
    tactics = sorted({layer.tactic for layer in engine.layers})
    try:
        outs = engine.create_context().run({k: cp.asarray(v) for k, v in feeds.items()})
        for spec, want in zip(engine.outputs, expected):
            got = cp.asnumpy(outs[spec.name])
            if got.dtype != want.dtype:
                return False, f"dtype {got.dtype} != {want.dtype}", tactics
            np.testing.assert_allclose(got, want, rtol=case.rtol, atol=case.atol)
    except AssertionError:
        return False, "mismatch", tactics
    except Exception as exc:  # noqa: BLE001
        return False, f"run: {str(exc).splitlines()[0][:160]}", tactics
    return True, "", tactics


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-per-op", type=int, default=3)
    ap.add_argument("--ops", default="")
    args = ap.parse_args()
    only = set(args.ops.split(",")) if args.ops else None
    t0 = time.time()
    groups = cases_by_op(args.max_per_op, only)
    covered = 0
    for op in sorted(groups):
        results = [run_case(c) for c in groups[op]]
        passed = sum(r[0] for r in results)
        covered += passed > 0
        tactics = sorted({t for r in results for t in r[2]})
        why = next((r[1] for r in results if not r[0]), "")
        print(f"{op:28s} {passed}/{len(results)}  {', '.join(tactics)[:70]:70s} {why}", flush=True)
    print(f"GPU fp32 runs {covered} of {len(groups)} ops (at least one node case passing) in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
