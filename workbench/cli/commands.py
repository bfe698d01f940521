"""The commands build, profile, inspect and demo (run, the benchmark and validator, is in run.py)."""

from __future__ import annotations

import json
import sys

from .common import (
    CliError,
    check_destination,
    existing_file,
    fmt_bytes,
    is_engine_file,
    load_engine,
    load_feeds,
    print_json,
    printable,
    write_json_file,
    write_text,
)
from . import accuracy, calib, ranges
from .run import cmd_run, context_options  # noqa: F401 - the parser binds cmd_run from here


def disabled_names(values) -> list[str]:
    """The names given to ``--disable``, checked against the passes and rules before any work."""
    import workbench as wb

    names = [d.strip() for item in values or [] for d in item.split(",") if d.strip()]
    known = sorted(wb.pass_names())
    if "help" in names or "list" in names:
        print("passes and fusion rules --disable accepts:")
        for name in known:
            print(f"  {name}")
        raise SystemExit(0)
    for name in names:
        if name not in known:
            raise CliError(f"--disable: unknown pass or rule {name!r}; valid names: {', '.join(known)}")
    return names


def cmd_build(args) -> int:
    existing_file(args.model, "model")
    check_destination(args.output, "engine")
    disable = disabled_names(args.disable)
    from .. import build, load_onnx
    from ..builder import BuilderConfig, parse_shapes
    from ..builder.fallback import fallback_text

    shapes = parse_shapes(args.shapes) if args.shapes is not None else {}
    profiles, buckets = ranges.profiles_and_buckets(args)
    overrides = {}
    for item in args.layer_precision or []:
        name, sep, prec = item.rpartition("=")
        if not sep:
            raise CliError(f"bad --layer-precision {item!r}: expected LAYER=PRECISION")
        overrides[name] = prec
    calibration = calib.calibration(args)
    cfg = BuilderConfig(device=args.device, precision=args.precision, shapes=shapes, disable=disable,
                        profiles=profiles, buckets=buckets,
                        layer_precisions=overrides, timing_cache=args.timing_cache, calibration=calibration,
                        accuracy_budget=args.accuracy_budget, strict_precision=args.strict_precision,
                        progress=sys.stderr.isatty() and not args.quiet, **context_options(args, BuilderConfig))
    net = load_onnx(args.model)
    calib.check(calibration, net, shapes)
    engine = build(net, cfg)
    info = engine.save(args.output)
    rep = engine.reports
    print(f"built {args.output}: {len(engine.layers):,} layers from {rep['nodes']['before']:,} ONNX nodes, "
          f"{engine.backend}, {cfg.precision}, {fmt_bytes(info['size'])}, sha256 {info['sha256'][:16]}")
    if "mixed_precision" in rep:
        print(accuracy.mixed_text(rep["mixed_precision"]))
    if "precision_fallback" in rep:
        print(fallback_text(rep["precision_fallback"]))
    if "build_ms" in engine.build_stats:
        print(f"build time {engine.build_stats['build_ms'] / 1e3:.2f} s")
    for b in engine.build_stats.get("buckets", []):
        shapes = ", ".join(f"{printable(k)} {'x'.join(map(str, v))}" for k, v in b["shapes"].items())
        print(f"  bucket {shapes}: {b['build_ms'] / 1e3:.2f} s")
    return 0


def cmd_profile(args) -> int:
    for path, what in ((args.csv, "CSV"), (args.trace, "trace")):
        if path:
            check_destination(path, what)
    engine = load_engine(args.engine)
    feeds = load_feeds(args.inputs, engine.inputs, args.memory_budget) if args.inputs else None
    from ..runtime.profile import format_profile, profile_dict, to_chrome_trace

    ctx = engine.create_context(**context_options(args))
    df = ctx.profile(feeds, runs=args.runs, mode=args.mode)
    if args.json:
        print_json(profile_dict(df))
    else:
        print(format_profile(df, top=args.top))
    note = sys.stderr if args.json else sys.stdout  # --json keeps stdout one JSON object
    if args.csv:
        write_text(args.csv, df.to_csv(index=False), "CSV")
        print(f"wrote {args.csv}", file=note)
    if args.trace:
        write_json_file(args.trace, to_chrome_trace(df), "trace")
        print(f"wrote {args.trace} (open it in chrome://tracing or ui.perfetto.dev)", file=note)
    return 0


def cmd_inspect(args) -> int:
    existing_file(args.path, "file")
    if is_engine_file(args.path):
        engine = load_engine(args.path)
        if args.json:
            from ..runtime.buckets import describe_ranges

            print(json.dumps({**engine.describe(), **describe_ranges(engine)}, indent=1, default=str))
        else:
            print_engine(engine)
            for line in ranges.ranges_text(engine):
                print(line)
        return 0
    from .. import load_onnx

    net = load_onnx(args.path)
    summary = net.summary()
    if args.json:
        print(json.dumps(summary, indent=1))  # json.dumps escapes control characters itself
        return 0
    opsets = ", ".join(f"{printable(k) or 'ai.onnx'} {v}" for k, v in summary["opsets"].items())
    print(f"model {printable(args.path)}: {summary['nodes']:,} nodes, {summary['parameters']:,} parameters, "
          f"opsets {opsets}")
    for kind, specs in (("input ", summary["inputs"]), ("output", summary["outputs"])):
        for s in specs:
            print(f"  {kind} {printable(s['name'])}: {s['dtype']} {printable(str(s['shape']))}")
    print("  ops: " + ", ".join(f"{printable(k)} {v:,}" for k, v in summary["op_histogram"].items()))
    return 0


def _escaped(df):
    """A report table with every text cell escaped (names come from the model file)."""
    out = df.copy()
    for col in out.columns:
        if out[col].map(lambda v: isinstance(v, str)).any():
            out[col] = out[col].map(lambda v: printable(v) if isinstance(v, str) else v)
    return out


def _memory_value(item, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return value
    if str(item).endswith("bytes"):
        return fmt_bytes(value)
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.3g}"


def print_engine(engine) -> None:
    """``inspect ENGINE``: summary, layers, precisions, memory, fusions fired and declined with reasons."""
    tables = engine.report()
    for name in ("summary", "layers", "precisions", "memory"):
        table = tables[name]
        print(f"== {name} ==")
        if name == "memory" and len(table):
            table = table.assign(value=[_memory_value(k, v) for k, v in zip(table["item"], table["value"])])
        print(_escaped(table).to_string(index=False) if len(table) else "(none)")
    fus = tables["fusions"]
    if not len(fus):
        return
    print("== fusions ==")
    print(_escaped(fus.groupby(["rule", "status"]).size().rename("count").reset_index()).to_string(index=False))
    declined = fus[fus["status"] == "declined"]
    if len(declined):
        print("== declined fusions ==")
        for row in declined.itertuples(index=False):
            nodes = list(row.nodes) if isinstance(row.nodes, (list, tuple)) else [row.nodes]
            shown = ", ".join(printable(str(n)) for n in nodes[:4]) + (f", +{len(nodes) - 4} more" if len(nodes) > 4 else "")
            print(f"  {printable(row.rule)} at {shown}: {printable(row.reason or 'no reason recorded')}")


def cmd_demo(args) -> int:
    from ..demo import run_demo

    return run_demo(output=args.output, runs=args.runs)
