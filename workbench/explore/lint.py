"""Linters: what in an engine (and its profile) is likely leaving speed or accuracy on the table.

``lint(engine, profile=None)`` returns a list of :class:`Finding` (rule, severity, message with the
reason, the layers involved); ``findings_table`` makes it a DataFrame; ``workbench lint ENGINE``
prints it. The rules:

* ``fp32-in-low-precision``: a layer that does arithmetic (``flops > 0``) left in fp32/tf32 in an
  engine built for fp16 / bf16 / int8 / fp8 / best, with the precision assigner's reason (a per-layer
  override the user asked for is not reported).
* ``conversions``: type and layout conversion layers (Cast, CastLike, Transpose, reformats) whose share of
  the profile's time is over ``conversion_share`` (default 5 %); without a profile, their share of
  the bytes the plan moves.
* ``unfused-qdq``: QuantizeLinear / DequantizeLinear layers left in the plan (Q/DQ that no fusion
  folded into the layer that consumes or produces the quantized tensor).
* ``below-roofline``: with a profile, layers that take at least ``min_share`` (1 %) of the time
  while reaching less than ``roofline_fraction`` (10 %) of what the roofline of this machine's
  measured peaks allows them (``views.roofline``).
* ``eager-segments``: a GPU engine whose layers run outside CUDA graphs (the plan does not replay
  graphs, or a layer's tactic could not be captured when it was tuned, or a replay profile saw it
  run eagerly): each such layer splits the graph and pays host launch latency.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

LOW_PRECISIONS = ("fp16", "bf16", "int8", "fp8", "best")
FULL = ("fp32", "tf32")
CONVERSION_OPS = {"Cast", "CastLike", "Transpose", "Reformat", "Copy"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}


@dataclass
class Finding:
    rule: str
    severity: str  # "warning" | "info"
    message: str
    layers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"rule": self.rule, "severity": self.severity, "message": self.message, "layers": list(self.layers)}


def _precision_reasons(engine) -> dict[str, str]:
    rows = engine.reports.get("precision") or []
    return {r.get("layer"): str(r.get("reason", "")) for r in rows if isinstance(r, dict)}


def fp32_in_low_precision(engine, profile=None) -> list[Finding]:
    want = engine.build_info.get("precision")
    if want not in LOW_PRECISIONS:
        return []
    reasons = _precision_reasons(engine)
    by_reason: dict[str, list[str]] = {}
    for layer in engine.layers:
        if layer.precision not in FULL or layer.flops <= 0:
            continue
        why = reasons.get(layer.name, "")
        if why.startswith("override") or why == "no float32 tensors":
            continue
        by_reason.setdefault(why or "no reason recorded", []).append(layer.name)
    return [Finding("fp32-in-low-precision", "warning",
                    f"{len(names)} layer(s) left in fp32 in {'an' if want[0] in 'aeiou' else 'a'} {want} engine: {why}", names)
            for why, names in by_reason.items()]


def conversions(engine, profile=None, share: float = 0.05) -> list[Finding]:
    conv = [l for l in engine.layers if l.op in CONVERSION_OPS]
    if not conv:
        return []
    names = {l.name for l in conv}
    if profile is not None:
        from ..runtime.profile import layer_rows  # noqa: PLC0415

        rows = layer_rows(profile)
        total = float(profile["median_ms"].sum())
        part = float(rows[rows["layer"].isin(names)]["median_ms"].sum())
        what = "time"
    else:
        total = float(sum(l.bytes_moved for l in engine.layers))
        part = float(sum(l.bytes_moved for l in conv))
        what = "bytes moved (no profile)"
    if not total or part / total <= share:
        return []
    ops = ", ".join(sorted({l.op for l in conv}))
    return [Finding("conversions", "warning",
                    f"casts and layout conversions ({ops}) take {100 * part / total:.1f}% of the {what}, over "
                    f"{100 * share:.0f}%: fuse them into their neighbours or keep one precision / layout across "
                    "the boundary", sorted(names, key=[l.name for l in engine.layers].index))]


def unfused_qdq(engine, profile=None) -> list[Finding]:
    names = [l.name for l in engine.layers if l.op in QDQ_OPS]
    if not names:
        return []
    return [Finding("unfused-qdq", "warning",
                    f"{len(names)} QuantizeLinear/DequantizeLinear layer(s) left in the plan: no fusion folded them "
                    "into a quantized layer, so they run as separate elementwise passes", names)]


def below_roofline(engine, profile, fraction: float = 0.1, min_share: float = 1.0, peaks=None) -> list[Finding]:
    if profile is None:
        return []
    from .views import roofline  # noqa: PLC0415

    r = roofline(engine, profile, peaks=peaks)
    slow = r[(r["pct"] >= min_share) & (r["efficiency"] < fraction)]
    if not len(slow):
        return []
    detail = "; ".join(f"{row.layer} {100 * row.efficiency:.1f}% ({row.bound}-bound)" for row in
                       slow.sort_values("pct", ascending=False).head(5).itertuples())
    return [Finding("below-roofline", "info",
                    f"{len(slow)} layer(s) with at least {min_share:g}% of the time reach under "
                    f"{100 * fraction:.0f}% of their roofline ({r.attrs['peaks'].get('source', 'peaks')}): {detail}",
                    list(slow["layer"]))]


def _eager_by_tactic(layer) -> str | None:
    chosen = next((r for r in layer.tactic_table if r.get("chosen")), None)
    if chosen is not None and chosen.get("graph") is False:
        return str(chosen.get("not_captured") or "its tactic could not be captured")
    return None


def eager_segments(engine, profile=None) -> list[Finding]:
    if engine.backend != "gpu":
        return []
    if not engine.plan.options.cuda_graph:
        return [Finding("eager-segments", "warning", "the plan does not replay CUDA graphs: every layer is launched "
                        "from the host (about 10 us each)", [l.name for l in engine.layers])]
    eager = {}
    for layer in engine.layers:
        why = _eager_by_tactic(layer)
        if why:
            eager[layer.name] = why
    if profile is not None:
        for name in profile.attrs.get("eager_layers") or []:
            eager.setdefault(name, "it ran outside the graphs in the replay profile")
    if not eager:
        return []
    order = [l.name for l in engine.layers]
    names = sorted(eager, key=order.index)
    reasons = "; ".join(f"{n}: {eager[n]}" for n in names[:5])
    return [Finding("eager-segments", "warning",
                    f"{len(names)} layer(s) run outside CUDA graphs and split the engine into segments ({reasons})",
                    names)]


def lint(engine, profile=None, *, conversion_share: float = 0.05, roofline_fraction: float = 0.1,
         min_share: float = 1.0, peaks=None) -> list[Finding]:
    """Every rule's findings, warnings first."""
    found = (fp32_in_low_precision(engine, profile) + conversions(engine, profile, conversion_share)
             + unfused_qdq(engine, profile) + below_roofline(engine, profile, roofline_fraction, min_share, peaks)
             + eager_segments(engine, profile))
    return sorted(found, key=lambda f: f.severity != "warning")


def findings_table(findings: list[Finding]) -> pd.DataFrame:
    """The findings as a DataFrame: rule, severity, message, layers (count), layer names."""
    return pd.DataFrame([{**f.to_dict(), "count": len(f.layers)} for f in findings],
                        columns=["rule", "severity", "message", "count", "layers"])
