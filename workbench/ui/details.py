"""The details panel for one selected layer: original nodes, precision, tactic with every candidate's
timing, measured time, FLOPs, bytes and memory. Returns escaped HTML."""

from __future__ import annotations

import pandas as pd

from .graph import shape_label
from .html import df_html, esc, kv_table

_DTYPE_BYTES = {"float64": 8, "int64": 8, "uint64": 8, "float32": 4, "int32": 4, "uint32": 4, "float16": 2,
                "bfloat16": 2, "int16": 2, "uint16": 2, "int8": 1, "uint8": 1, "bool": 1}


def tensor_bytes(spec: dict) -> int | None:
    shape, size = spec.get("shape"), _DTYPE_BYTES.get(spec.get("dtype") or "")
    if shape is None or size is None or not all(isinstance(d, int) for d in shape):
        return None
    n = size
    for d in shape:
        n *= d
    return n


def _fmt_int(x) -> str:
    return "—" if x is None else f"{int(x):,}"


def layer_details_html(desc: dict, layer_name: str, profile: pd.DataFrame | None = None,
                       offsets=None) -> str:
    """``desc`` is ``engine.describe()``; ``profile`` an optional ``ctx.profile`` DataFrame;
    ``offsets`` the memory plan's (tensor, arena offset) pairs (``engine.reports["memory"]["offsets"]``)."""
    layer = next((l for l in desc["layers"] if l["name"] == layer_name), None)
    if layer is None:
        return f"<i>no layer named {esc(layer_name)} in this engine</i>" if layer_name else "<i>click a layer</i>"
    rows = [("layer", layer["name"]), ("type", layer["type"]), ("precision", layer["precision"]),
            ("tactic", layer["tactic"]), ("FLOPs", _fmt_int(layer.get("flops"))),
            ("bytes moved", _fmt_int(layer.get("bytes")))]
    if profile is not None and len(profile):
        hit = profile[profile["layer"] == layer_name]
        if len(hit):
            r = hit.iloc[0]
            rows += [("time (median)", f"{r['median_ms']:.4f} ms"), ("share of time", f"{r['pct']:.2f} %"),
                     ("achieved", f"{r['gflops_per_s']:.2f} GFLOP/s · {r['gb_per_s']:.2f} GB/s")]
    out_bytes = [tensor_bytes(s) for s in layer["outputs"]]
    rows.append(("output memory", _fmt_int(sum(b for b in out_bytes if b)) + " bytes"))
    offsets = dict(offsets or [])
    for s in layer["outputs"]:
        if s["name"] in offsets:
            rows.append((f"arena offset of {s['name']}", _fmt_int(offsets[s["name"]])))
    parts = [kv_table(rows, "Layer")]
    nodes = pd.DataFrame({"onnx node": layer["onnx_nodes"],
                          "op": layer["onnx_ops"] if len(layer["onnx_ops"]) == len(layer["onnx_nodes"])
                          else [""] * len(layer["onnx_nodes"])})
    parts.append(df_html(nodes, 40, f"Original ONNX nodes ({len(nodes)})"))
    io = pd.DataFrame([{"dir": d, "tensor": s["name"], "shape": shape_label(s)}
                       for d, specs in (("in", layer["inputs"]), ("out", layer["outputs"])) for s in specs])
    parts.append(df_html(io, 20, "Tensors"))
    cands = pd.DataFrame([{"tactic": c.get("tactic"), "chosen": c.get("tactic") == layer["tactic"],
                           "ms": c.get("ms"), "note": c.get("reason") or "", "config": str(c.get("config") or "")}
                          for c in layer.get("tactics") or []])
    parts.append(df_html(cands, 40, "Tactic candidates (autotune timings)"))
    return "".join(parts)
