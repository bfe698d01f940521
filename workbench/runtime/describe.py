"""What an engine says about itself: the inspect JSON and the report tables."""

from __future__ import annotations

from collections import Counter

from ..core.plan import Layer


def _layer_dict(layer: Layer) -> dict:
    return {
        "name": layer.name,
        "type": layer.op if not layer.domain else f"{layer.domain}.{layer.op}",
        "op": layer.op,
        "domain": layer.domain,
        "onnx_nodes": list(layer.onnx_nodes),
        "onnx_ops": list(layer.onnx_ops),
        "precision": layer.precision,
        "tactic": layer.tactic,
        "tactic_config": dict(layer.tactic_config),
        "binaries": dict(layer.binaries),
        "tactics": list(layer.tactic_table),
        "inputs": [s.to_dict() for s in layer.input_specs],
        "outputs": [s.to_dict() for s in layer.output_specs],
        "flops": layer.flops,
        "bytes": layer.bytes_moved,
    }


def onnx_node_index(engine) -> dict[str, str]:
    """Reverse lookup: original ONNX node name -> the engine layer that covers it."""
    index = {}
    for layer in engine.layers:
        for n in layer.onnx_nodes:
            index[n] = layer.name
    return index


def describe(engine) -> dict:
    memory = dict(engine.reports.get("memory", {}))  # the memory plan's statistics, for people
    return {
        "producer": engine.build_info.get("producer", {}),
        "target": engine.target,
        "build": engine.build_info,
        "inputs": [s.to_dict() for s in engine.inputs],
        "outputs": [s.to_dict() for s in engine.outputs],
        "layers": [_layer_dict(layer) for layer in engine.layers],
        "fusions": list(engine.reports.get("fusions", [])),
        "fusion_counts": dict(engine.reports.get("counters", {})),
        "nodes": engine.reports.get("nodes", {}),
        "onnx_node_to_layer": onnx_node_index(engine),
        "memory": memory,
        "arena": {"bytes": engine.plan.arena.bytes, "alignment": engine.plan.arena.alignment,
                  "offsets": dict(engine.plan.arena.offsets)},
        "run_options": {"cuda_graph": engine.plan.options.cuda_graph,
                        "max_elements": engine.plan.options.max_elements},
        "precisions": dict(Counter(layer.precision for layer in engine.layers)),
        **({"precision_fallback": engine.reports["precision_fallback"]}
           if engine.reports.get("precision_fallback") else {}),
    }


def report_tables(engine) -> dict:
    import pandas as pd

    layers = pd.DataFrame(
        [
            {
                "layer": l.name,
                "type": l.op,
                "onnx_nodes": len(l.onnx_nodes),
                "onnx_ops": "+".join(l.onnx_ops),
                "precision": l.precision,
                "tactic": l.tactic,
                "output_shape": "x".join(str(d) for d in (l.output_specs[0].shape or [])) if l.output_specs else "",
                "flops": l.flops,
                "bytes": l.bytes_moved,
            }
            for l in engine.layers
        ]
    )
    fusions = pd.DataFrame(engine.reports.get("fusions", []), columns=["rule", "status", "reason", "nodes", "root"])
    precisions = (
        layers.groupby("precision").size().rename("layers").reset_index() if len(layers) else pd.DataFrame()
    )
    tactic_rows = []
    for l in engine.layers:
        for cand in l.tactic_table or [{"tactic": l.tactic}]:
            tactic_rows.append({"layer": l.name, "chosen": cand.get("tactic") == l.tactic, **cand})
    tactics = pd.DataFrame(tactic_rows)
    mem = {k: v for k, v in engine.reports.get("memory", {}).items() if k not in ("offsets", "tensors_dynamic")}
    memory = pd.DataFrame([{"item": k, "value": v} for k, v in mem.items()])
    nodes = engine.reports.get("nodes", {})
    summary = pd.DataFrame(
        [
            {"item": "backend", "value": engine.backend},
            {"item": "layers", "value": len(engine.layers)},
            {"item": "onnx nodes before", "value": nodes.get("before")},
            {"item": "nodes after optimization", "value": nodes.get("after")},
            {"item": "fusions fired", "value": sum(1 for f in engine.reports.get("fusions", []) if f.get("status") == "fired")},
            {"item": "fusions declined", "value": sum(1 for f in engine.reports.get("fusions", []) if f.get("status") == "declined")},
        ]
        + ([{"item": "precision fallback", "value": fallback_text(engine.reports["precision_fallback"])}]
           if engine.reports.get("precision_fallback") else [])
    )
    return {"summary": summary, "layers": layers, "fusions": fusions, "precisions": precisions,
            "tactics": tactics, "memory": memory}


def fallback_text(report: dict) -> str:
    """One line on what an int8 / fp8 build's comparison with fp16 did (``builder/fallback.py``):
    the CLI prints it after a build, ``describe`` puts it in the summary."""
    try:
        return _fallback_text(report)
    except (KeyError, TypeError, ValueError, AttributeError):  # a report from another version
        return "int8 / fp8 against fp16: the saved report is incomplete"


def _fallback_text(report: dict) -> str:
    p, rows = report["precision"], report.get("layers", [])
    if report.get("error"):
        return f"{p}: every layer kept at {p}: {report['error']}"
    if not report.get("compared", 1):
        return f"{p}: no layer at {p} to compare with fp16"
    if not rows:
        return f"{p}: no layer measured faster at fp16"
    total, tries = report.get("total_ms", {}), report.get("tries", [])
    if report.get("kept") == "with_fallback":
        what = (f"{len(report['moved'])} moved there ({total['placed']:.3f} -> {total['with_fallback']:.3f} ms, "
                f"{report.get('measure', 'summed layer times')})")
    else:
        done = [t for t in tries if "total_ms" in t]
        what = f"kept at {p}"
        if done:
            what += (": moving " + " / ".join(str(t["layers"]) for t in done) + " of them took " +
                     " / ".join(f"{t['total_ms']:.3f}" for t in done) + f" ms vs {total['placed']:.3f} ms "
                     f"({report.get('measure', 'summed layer times')})")
        failed = [t for t in tries if "error" in t]
        if failed:
            what += f" (a build with {failed[0]['layers']} moved failed: {failed[0]['error']})"
    return f"{p}: {len(rows)} layer(s) measured faster at fp16; {what}; --strict-precision keeps every layer at {p}"


def end_to_end_line(rep: dict) -> str:
    """One line on the budgeted search's end-to-end check (``report["mixed_precision"]``, on the
    GPU): the result's time against the uniform builds within the budget, and which was kept;
    empty where the check did not run."""
    e2e = rep.get("end_to_end") or {}
    if not e2e:
        return ""
    rivals = ", ".join(f"uniform {p} {r['ms']:.4g} ms (held-out error {r['held_out']:.3g})"
                       for p, r in e2e["uniform"].items())
    return f"end to end ({e2e['how']}): search result {e2e['result_ms']:.4g} ms; {rivals}; kept: {e2e['kept']}"
