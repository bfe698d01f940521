"""Outputs made by a Softmax over tied logits.

The light_* models onnx ships have constant weights: every class gets the same logit (about 9.5e9
for light_squeezenet, where one float32 ulp is 1024) and the shipped output is a uniform 0.001.
A kernel that rounds some output channels differently (a BLAS GEMM's edge tiles) breaks the tie by
a few ulps, which moves a softmax over values that large anywhere between uniform and one-hot. For
such outputs the tests compare the logits, which is what the engine is responsible for.
"""

from __future__ import annotations

import numpy as np

TIE_ULPS = 64


def outputs_and_logits(engine, feeds: dict) -> tuple[dict, dict]:
    """(graph outputs, {output name: the input of the Softmax layer that made it}) of one CPU run."""
    made_by = {o: l for l in engine.layers for o in l.outputs}
    want = {spec.name: made_by[spec.name].inputs[0] for spec in engine.outputs
            if spec.name in made_by and made_by[spec.name].op == "Softmax"}
    seen: dict = {}
    ctx = engine.create_context()
    outs = ctx._exec.run(feeds, tap=lambda n, v: seen.__setitem__(n, np.array(v, copy=True)) if n in want.values() else None)
    outputs = {spec.name: v for spec, v in zip(engine.outputs, outs)}
    return outputs, {k: seen[v] for k, v in want.items() if v in seen}


def tied(logits: np.ndarray) -> bool:
    """Whether every row of ``logits`` (batch first) lies within ``TIE_ULPS`` float32 ulps of its largest value."""
    rows = np.asarray(logits, np.float32).reshape(logits.shape[0], -1)
    top = np.abs(rows).max(axis=1)
    return bool(np.all(np.ptp(rows, axis=1) <= TIE_ULPS * np.spacing(top)))
