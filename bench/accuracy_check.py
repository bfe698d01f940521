"""Which layers make a reduced-precision engine inaccurate, and does keeping them wider fix it?

    python3 bench/accuracy_check.py [--model tests/models/mobilenetv2_legacy.onnx] [--device gpu]
        [--precision fp16] [--top 5] [--feeds 2]
    python3 bench/accuracy_check.py --torchvision mobilenet_v2 --batch 8   # needs torch + torchvision

``--torchvision NAME`` exports that full-size torchvision model (seeded random weights, no download)
with the TorchScript exporter instead of reading ``--model``.

Builds the model at fp32 and at ``--precision`` on ``--device`` (shapes from the model's saved .npz
beside it), prints the engine's error against the fp32 engine, the accuracy report's top layers
(``engine.accuracy``), then rebuilds with those layers forced to fp32 and with as many layers
taken from the *bottom* of the report forced instead (a control): the error should fall with the
top layers and not with the bottom ones.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import workbench as wb


def rel(got: list[dict], want: list[dict]) -> float:
    """Largest relative L2 error over the outputs, pooled over feeds."""
    worst = 0.0
    for name in want[0]:
        num = sum(float(np.sum((np.asarray(g[name], np.float64) - np.asarray(w[name], np.float64)) ** 2))
                  for g, w in zip(got, want))
        den = sum(float(np.sum(np.asarray(w[name], np.float64) ** 2)) for w in want)
        worst = max(worst, (num / max(den, 1e-30)) ** 0.5)
    return worst


def export_torchvision(name: str, batch: int) -> tuple[str, dict]:
    """A torchvision classifier with seeded random weights (BN statistics from a few training-mode
    batches, so they are not the identity) exported to a temporary ONNX file."""
    import tempfile

    import torch
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    model.train()
    with torch.no_grad():
        for _ in range(3):  # running statistics that differ from the initial mean 0 / var 1
            model(torch.randn(8, 3, 224, 224))
    model.eval()
    x = torch.randn(batch, 3, 224, 224)
    path = os.path.join(tempfile.mkdtemp(prefix="wb-acc-"), f"{name}.onnx")
    torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["logits"], opset_version=17, dynamo=False)
    return path, {"x": x.numpy()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.path.join("tests", "models", "mobilenetv2_legacy.onnx"))
    ap.add_argument("--device", default="gpu")
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--feeds", type=int, default=2)
    ap.add_argument("--torchvision", metavar="NAME", help="export this torchvision model instead of --model")
    ap.add_argument("--batch", type=int, default=1, help="batch of the --torchvision export")
    args = ap.parse_args()
    if args.torchvision:
        args.model, inputs = export_torchvision(args.torchvision, args.batch)
    else:
        saved = np.load(os.path.splitext(args.model)[0] + ".npz")
        inputs = {k: v for k, v in saved.items() if not k.startswith("output:")}
    shapes = {k: v.shape for k, v in inputs.items()}
    rng = np.random.default_rng(0)
    feeds = []
    for _ in range(args.feeds):
        feeds.append({k: (rng.standard_normal(v.shape).astype(v.dtype) if v.dtype.kind == "f" else v)
                      for k, v in inputs.items()})
    net = wb.load_onnx(args.model)

    def outputs(engine):
        ctx = engine.create_context()
        return [ctx.run(f) for f in feeds]

    ref = outputs(wb.build(net, wb.BuilderConfig(device=args.device, shapes=shapes)))
    low = wb.build(net, wb.BuilderConfig(device=args.device, precision=args.precision, shapes=shapes))
    print(f"{os.path.basename(args.model)} {args.device} {args.precision}: {len(low.layers)} layers, "
          f"error vs fp32 {rel(outputs(low), ref):.3e}")
    report = low.accuracy(feeds)
    print(report.to_text() if hasattr(report, "to_text") else report)
    steerable = {layer.name for layer in low.layers if layer.onnx_nodes}  # not the build's own casts
    ranked = [r["layer"] for r in report.top(len(low.layers)) if r["precision"] != "fp32" and r["layer"] in steerable]
    for label, names in (("top", ranked[:args.top]), ("bottom (control)", ranked[-args.top:])):
        overrides = {n: "fp32" for n in names}
        engine = wb.build(net, wb.BuilderConfig(device=args.device, precision=args.precision, shapes=shapes,
                                                layer_precisions=overrides))
        print(f"{label} {len(names)} layers forced to fp32: error vs fp32 {rel(outputs(engine), ref):.3e}")


if __name__ == "__main__":
    main()
