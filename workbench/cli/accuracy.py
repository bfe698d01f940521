"""``workbench accuracy ENGINE``: the per-layer accuracy report of an engine against an fp32
reference of its own plan (``workbench.runtime.accuracy``), and ``build --accuracy-budget``, the
option and the table of candidates that ``build --precision best`` prints after a budgeted search
(``workbench.builder.mixed``)."""

from __future__ import annotations

import argparse
import math
import os

from ..runtime.describe import end_to_end_line
from .common import CliError, existing_file, fmt_err, load_engine, load_feeds, print_json, printable


def _budget(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < x < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return x


def add_build_options(p) -> None:
    p.add_argument("--accuracy-budget", type=_budget, metavar="B",
                   help="with --precision best: the largest error vs fp32 (relative L2, worst output) allowed on "
                        "held-out inputs; per-layer precisions are searched for the lowest latency within it "
                        "(held-out inputs come from --calib)")


def add_command(sub, positive, add_threads, add_budget) -> None:
    a = sub.add_parser("accuracy", help="per-layer error of an engine against an fp32 reference of its plan",
                       description="Run an engine and an fp32 reference of the same layers side by side and report, "
                                   "per layer (with its ONNX nodes), the error it adds, the error it inherits, its "
                                   "output error, cosine similarity and non-finite values.")
    a.add_argument("engine", help="the engine file")
    a.add_argument("--inputs", metavar="FEEDS.npz|DIR",
                   help=".npz whose keys are input names, or a folder of them (their errors are pooled) "
                        "(default: random inputs of the engine's shapes)")
    a.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    a.add_argument("--top", type=positive, default=10, metavar="N", help="layers to list, largest added error first")
    a.add_argument("--reference", metavar="ENGINE",
                   help="an fp32 engine of the same model (the same layers), whose weights the reference of int8 / "
                        "fp8 layers uses (default: their stored weights, dequantized)")
    how = a.add_mutually_exclusive_group()
    how.add_argument("--no-impact", action="store_true",
                     help="skip each layer's error at the outputs (quadratic in the number of layers)")
    how.add_argument("--impact-seconds", type=_budget, metavar="S",
                     help="measure each layer's error at the outputs only where the first feed's estimate of those "
                          "runs is within S seconds per feed (they run the reference downstream of every layer)")
    a.add_argument("--json", action="store_true", help="print the whole report as one JSON object")
    add_threads(a)
    add_budget(a)
    a.set_defaults(fn=cmd_accuracy)


def feed_files(path: str) -> list[str]:
    """The .npz files ``--inputs`` names: the file itself, or a folder's .npz files in name order."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".npz"))
        if not files:
            raise CliError(f"inputs folder {path!r} holds no .npz files")
        return files
    return [existing_file(path, "inputs file")]


def cmd_accuracy(args) -> int:
    engine = load_engine(args.engine)
    reference = load_engine(args.reference) if args.reference else None
    if reference is not None and [l.name for l in reference.layers] != [l.name for l in engine.layers]:
        raise CliError(f"--reference {args.reference!r} does not have the layers of {args.engine!r}; build it from the "
                       "same model with --precision fp32")
    if args.inputs is not None:
        if not os.path.lexists(args.inputs):
            raise CliError(f"inputs {args.inputs!r} do not exist")
        files = feed_files(args.inputs)
        feeds = (load_feeds(f, engine.inputs, args.memory_budget) for f in files)
    else:
        from ..runtime.feeds import random_feeds

        feeds = [random_feeds(engine.inputs, seed=args.seed, memory_budget=args.memory_budget)]
    from ..runtime.accuracy import measure
    from ..runtime.cpu import cpu_threads, default_threads

    with cpu_threads(args.threads or default_threads()):
        impact = False if args.no_impact else (args.impact_seconds or True)
        report = measure(engine, feeds, impact=impact, reference=reference,
                         memory_budget=args.memory_budget)
    if args.json:
        print_json(report.to_dict())
    else:
        print(printable_report(report.to_text(top=args.top)))
    return 0


def printable_report(text: str) -> str:
    """The report's text with every line's control characters escaped (names come from the model)."""
    return "\n".join(printable(line) for line in text.splitlines())


def mixed_text(rep: dict) -> str:
    """What ``build --precision best --accuracy-budget B`` prints: the result and the
    latency-vs-error table of every candidate tried."""
    err = rep.get("error", {})
    feeds = rep.get("feeds", {})
    lines = [f"accuracy budget {rep['budget']:g} ({rep.get('metric')}): {rep.get('strategy')} result, error "
             f"{fmt_err(_num(err.get('held_out')))} on {feeds.get('held_out', '?')} held-out batch(es), "
             f"{fmt_err(_num(err.get('search')))} on {feeds.get('search', '?')} search batch(es) "
             f"({feeds.get('source', '')})",
             f"{rep['below_fp32']} of {rep['layers']} layers below fp32 ({100 * rep['fraction_below_fp32']:.0f}%); "
             f"latency {rep['latency_ms']:.4g} ms vs {rep['fp32_latency_ms']:.4g} ms in fp32 "
             f"({rep['latency_source'].split(':')[0]})"]
    line = end_to_end_line(rep)
    if line:
        lines.append(line)
    sec = rep.get("seconds") or {}
    if "total" in sec:
        lines.append(f"search time {sec['total']:.1f} s: {rep.get('builds', '?')} builds {sec.get('builds', 0):.1f} s, "
                     f"sensitivities {sec.get('sensitivities', 0):.1f} s")
    lines.append("candidates tried (latency vs error):")
    lines.append(f"  {'#':>3}  {'latency ms':>10}  {'error':>9}  {'below fp32':>10}  {'ok':>3}  candidate")
    for c in rep.get("candidates", []):
        ok = "yes" if c.get("within_budget") else "no"
        lines.append(f"  {c['candidate']:>3}  {c['latency_ms']:>10.4g}  {fmt_err(_num(c.get('error'))):>9}  "
                     f"{c['layers_below_fp32']:>10}  {ok:>3}  {printable(c['label'])}")
    for note in rep.get("notes", []):
        lines.append(f"note: {printable(note)}")
    return "\n".join(lines)


def _num(x) -> float:
    return math.nan if x is None else float(x)
