"""The main job: optimize the embedded ResNet-50, run it against its reference output, profile it.

The model is the real ResNet-50 architecture that ships inside the onnx package
(``onnx/backend/test/data/light/light_resnet50.onnx``), so the demo needs no download.
"""

from __future__ import annotations

import os
import time

import numpy as np

from .core.numerics import rel_err


def embedded_model_path(name: str = "light_resnet50") -> str:
    import onnx

    path = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", f"{name}.onnx")
    if not os.path.exists(path):
        from .errors import ModelLoadError

        raise ModelLoadError(f"the embedded model {name} is missing from the onnx package at {path}")
    return path


def reference_io(model_path: str) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """The inputs onnx's own test runner makes for a light model, and its shipped outputs."""
    import onnx
    from onnx import numpy_helper
    from onnx.backend.test.runner import Runner

    model = onnx.load(model_path)
    inits = {i.name for i in model.graph.initializer}
    name = os.path.splitext(os.path.basename(model_path))[0]
    feeds = {x.name: Runner.generate_dummy_data(x, seed=0, name=name, random=False)
             for x in model.graph.input if x.name not in inits}
    outputs = []
    prefix = os.path.splitext(model_path)[0]
    for i in range(len(model.graph.output)):
        t = onnx.TensorProto()
        with open(f"{prefix}_output_{i}.pb", "rb") as f:
            t.ParseFromString(f.read())
        outputs.append(numpy_helper.to_array(t))
    return feeds, outputs


def run_demo(output: str = os.path.join("out", "resnet50.wbe"), runs: int = 5) -> int:
    import workbench as wb
    from .runtime.profile import format_profile

    path = embedded_model_path()
    print(f"model: {path}")
    t0 = time.perf_counter()
    net = wb.load_onnx(path)
    s = net.summary()
    print(f"loaded {s['nodes']} ONNX nodes, {s['parameters']:,} parameters, opset {s['opsets'].get('', s['opsets'])}")
    engine = wb.build(net, wb.BuilderConfig(device="auto"))
    rep = engine.reports
    fired = sum(1 for f in rep.get("fusions", []) if f["status"] == "fired")
    print(f"built a {engine.backend} engine: {rep['nodes']['before']} nodes -> {len(engine.layers)} layers "
          f"({fired} fusions) in {time.perf_counter() - t0:.2f} s")
    mem = rep["memory"]
    print(f"activation memory: {mem['arena_bytes'] / 2**20:.1f} MiB planned vs {mem['naive_bytes'] / 2**20:.1f} MiB "
          f"without reuse; weights {mem['weights_bytes'] / 2**20:.1f} MiB")
    feeds, expected = reference_io(path)
    ctx = engine.create_context()
    outs = ctx.run(feeds)
    errs = [rel_err(outs[o.name], e) for o, e in zip(engine.outputs, expected)]
    ok = all(e < 1e-3 for e in errs)
    print(f"output vs the shipped reference: relative error {max(errs):.2e} -> {'OK' if ok else 'MISMATCH'}")
    df = ctx.profile(feeds, runs=runs)
    print(format_profile(df, top=10))
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    info = engine.save(output)
    print(f"engine saved to {os.path.abspath(output)} ({info['size'] / 2**20:.1f} MiB, sha256 {info['sha256'][:16]})")
    return 0 if ok else 1
