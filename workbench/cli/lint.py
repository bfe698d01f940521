"""``workbench lint ENGINE``: the explorer's linters (``workbench.explore.lint``) on an engine file:
layers left in fp32 in a low-precision engine, conversions over a share of the time, Q/DQ that did
not fuse, layers far below the roofline, layers outside CUDA graphs. Static by default (what the
engine file says); ``--profile`` also profiles it on this machine for the time-based rules."""

from __future__ import annotations

from .common import load_engine, load_feeds, print_json, printable


def add_command(sub, positive, add_threads, add_budget) -> None:
    p = sub.add_parser("lint", help="findings that leave speed or accuracy on the table, with the layers involved",
                       description="Check an engine for layers left in fp32 in a low-precision engine, casts and "
                                   "layout conversions over a share of the time, unfused QuantizeLinear/"
                                   "DequantizeLinear, layers far below the roofline and layers outside CUDA graphs.")
    p.add_argument("engine", help="the engine file")
    p.add_argument("--profile", action="store_true",
                   help="profile the engine here first (time-based rules: conversions by time, roofline)")
    p.add_argument("--inputs", metavar="FEEDS.npz", help="inputs of the profile (default: random data of the engine's shapes)")
    p.add_argument("--runs", type=positive, default=10, metavar="N", help="timed runs of the profile")
    p.add_argument("--json", action="store_true", help="print one JSON object (findings, with their layers)")
    p.add_argument("--strict", action="store_true", help="exit 1 when there is a warning")
    add_threads(p)
    add_budget(p)
    p.set_defaults(fn=cmd_lint)


def cmd_lint(args) -> int:
    engine = load_engine(args.engine)
    profile = None
    if args.profile or args.inputs:
        from .run import context_options

        feeds = load_feeds(args.inputs, engine.inputs, args.memory_budget) if args.inputs else None
        profile = engine.create_context(**context_options(args)).profile(feeds, runs=args.runs)
    from ..explore.lint import lint

    findings = lint(engine, profile)
    if args.json:
        print_json({"engine": args.engine, "profiled": profile is not None,
                    "findings": [f.to_dict() for f in findings]})
    elif not findings:
        print(f"{printable(args.engine)}: no findings ({len(engine.layers):,} layers"
              f"{', profiled' if profile is not None else ''})")
    else:
        for f in findings:
            print(f"{f.severity}: [{f.rule}] {printable(f.message)}")
            shown = ", ".join(printable(n) for n in f.layers[:8])
            more = f" ... and {len(f.layers) - 8:,} more" if len(f.layers) > 8 else ""
            print(f"  layers: {shown}{more}")
    return 1 if args.strict and any(f.severity == "warning" for f in findings) else 0
