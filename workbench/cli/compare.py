"""``run --compare onnxruntime``: the engine's source model through onnxruntime on the same inputs,
each output checked element by element like Polygraphy: ``|got - ref| <= atol + rtol * |ref|``
(NaN matching NaN), with the largest absolute and relative errors reported."""

from __future__ import annotations

import os
import re

import numpy as np

from .common import CliError, existing_file

_MODEL_HINT = "give the ONNX file with --model MODEL.onnx"


def source_model(engine, engine_path: str, override: str | None) -> str:
    """The ONNX file the engine was built from: ``--model``, else the source its build info
    records (a relative path is tried from here, then beside the engine)."""
    if override:
        return existing_file(override, "model")
    source = engine.build_info.get("source") if isinstance(engine.build_info, dict) else None
    if not isinstance(source, str) or not source or source.startswith("<"):
        raise CliError(f"the engine records no source file (it was built from {source or 'an unknown model'}); "
                       f"{_MODEL_HINT}")
    candidates = [source]
    if not os.path.isabs(source):
        candidates.append(os.path.join(os.path.dirname(os.path.abspath(engine_path)), os.path.basename(source)))
    for path in candidates:
        if os.path.exists(path):
            return existing_file(path, "model")
    raise CliError(f"the engine's source model {source!r} (recorded at build) is not available; {_MODEL_HINT}")


def run_onnxruntime(model: str, feeds: dict, threads: int | None) -> tuple[dict[str, np.ndarray], str]:
    """Outputs of ``model`` under onnxruntime's CPU provider, and onnxruntime's version."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise CliError("--compare onnxruntime needs the onnxruntime package (pip install onnxruntime)") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: its warnings would interleave with the report
    if threads is not None:
        opts.intra_op_num_threads = threads
    try:
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own unrelated exception types
        raise CliError(f"onnxruntime cannot load {model!r}: {_first_line(exc)}") from None
    wanted = [i.name for i in sess.get_inputs()]
    missing = [n for n in wanted if n not in feeds]
    if missing:
        raise CliError(f"onnxruntime's model {model!r} needs input {missing[0]!r}, which the engine does not take; "
                       "is --model the model the engine was built from?")
    names = [o.name for o in sess.get_outputs()]
    try:
        values = sess.run(names, {n: feeds[n] for n in wanted})
    except Exception as exc:  # noqa: BLE001
        raise CliError(f"onnxruntime failed running {model!r}: {_first_line(exc)}") from None
    return dict(zip(names, (np.asarray(v) for v in values))), ort.__version__


def _first_line(exc: BaseException) -> str:
    """onnxruntime's message without the C++ source location and function signature it embeds."""
    text = str(exc).strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    where = re.search(r"\S+\.(?:cc|cpp|h):\d+ ", text)
    if where:
        rest, depth, i = text[where.end():], 0, 0
        start = rest.find("(")
        if start >= 0:
            for i in range(start, len(rest)):
                depth += {"(": 1, ")": -1}.get(rest[i], 0)
                if depth == 0:
                    break
            text = f"{text[:where.start()].rstrip(' :')}: {rest[i + 1:].strip()}"
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)[:300]


def compare_outputs(got: dict, ref: dict, atol: float, rtol: float) -> list[dict]:
    """One row per engine output: max_abs, max_rel, mismatched (element count), passed, problem."""
    rows = []
    for name, a in got.items():
        row = {"name": name, "max_abs": float("nan"), "max_rel": float("nan"), "mismatched": 0, "elements": int(a.size),
               "passed": False, "problem": ""}
        rows.append(row)
        if name not in ref:
            row["problem"] = "onnxruntime has no output of this name"
            continue
        b = ref[name]
        if a.shape != b.shape:
            row["problem"] = f"shape {list(a.shape)} vs onnxruntime {list(b.shape)}"
            continue
        if a.dtype != b.dtype:
            row["problem"] = f"dtype {a.dtype} vs onnxruntime {b.dtype}"
            continue
        if a.dtype.kind not in "fciub":
            equal = np.asarray(a == b)
            row.update(max_abs=0.0 if equal.all() else float("inf"), max_rel=0.0 if equal.all() else float("inf"),
                       mismatched=int((~equal).sum()))
        else:
            x, y = a.astype(np.float64 if a.dtype.kind != "c" else np.complex128), b.astype(
                np.float64 if b.dtype.kind != "c" else np.complex128)
            with np.errstate(all="ignore"):
                both_nan = np.isnan(x) & np.isnan(y)
                same_inf = np.isinf(x) & (x == y)
                diff = np.where(both_nan | same_inf, 0.0, np.abs(x - y))
                diff = np.where(np.isnan(diff), np.inf, diff)  # NaN on one side only: as far off as can be
                rel = np.where(diff == 0, 0.0, diff / np.abs(y))
                ok = diff <= atol + rtol * np.abs(np.where(np.isfinite(y), y, 0))
            row.update(max_abs=float(diff.max()) if diff.size else 0.0, max_rel=float(rel.max()) if rel.size else 0.0,
                       mismatched=int((~ok).sum()))
        row["passed"] = row["mismatched"] == 0
        if not row["passed"]:
            row["problem"] = f"{row['mismatched']:,} of {row['elements']:,} elements outside tolerance"
    return rows
