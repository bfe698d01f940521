"""Shape ranges on the command line: ``build --min-shapes/--opt-shapes/--max-shapes`` (trtexec's
spelling, ``name:1x16,mask:1x16``; repeat the three for more profiles) and ``--buckets``, and what
``inspect`` prints about an engine's profiles and buckets."""

from __future__ import annotations

from .common import CliError, fmt_bytes, printable


def add_options(b) -> None:
    for which, what in (("min", "smallest"), ("opt", "tuned-for"), ("max", "largest")):
        b.add_argument(f"--{which}-shapes", action="append", metavar="NAME:DxD[,...]",
                       help=f"{what} input shapes of a shape range (profile); give --min-shapes, --opt-shapes and "
                            "--max-shapes together, once per profile (instead of --shapes)")
    b.add_argument("--buckets", action="append", metavar="B,B,..|DIM=V,V",
                   help="static plans of a build with shape ranges: batch sizes (a run pads up to the next), or "
                        "DIM=values for another dynamic dim (matched exactly); repeatable (default on the GPU: "
                        "1,2,4,8,16,24,32,... up to the max batch, and min/opt/max of other dims)")


def profiles_and_buckets(args) -> tuple[list, object]:
    """(profiles, buckets) for ``BuilderConfig`` from the options; misuse is a one-line error."""
    from ..builder.profiles import parse_buckets, profiles_from_text

    ranges = [args.min_shapes, args.opt_shapes, args.max_shapes]
    if not any(ranges):
        if args.buckets:
            raise CliError("--buckets needs shape ranges: give --min-shapes, --opt-shapes and --max-shapes")
        return [], None
    if args.shapes is not None:
        raise CliError("give --shapes (one static shape) or --min-shapes/--opt-shapes/--max-shapes (ranges), not both")
    profiles = profiles_from_text(*ranges)
    return profiles, parse_buckets(args.buckets) if args.buckets else None


def ranges_text(engine) -> list[str]:
    """``inspect ENGINE``: the profiles and buckets as lines (none when the engine has no ranges)."""
    from ..runtime.buckets import describe_ranges, fmt_range

    d = describe_ranges(engine)
    lines = []
    if d["profiles"]:
        lines.append("== profiles ==")
        for p in d["profiles"]:
            ranges = ", ".join(f"{printable(k)} {fmt_range(r)}" for k, r in p["ranges"].items())
            extra = (f"; arena at max {fmt_bytes(p['arena_bytes_at_max'])}"
                     if isinstance(p.get("arena_bytes_at_max"), int) else "")
            lines.append(f"  #{p['index']}: {ranges}{extra}")
    if d["buckets"]:
        padded = d["buckets"][0]["batch"] is not None
        lines.append(f"== buckets ({'batch padded up to the next bucket' if padded else 'shapes matched exactly'}) ==")
        for b in d["buckets"]:
            shapes = ", ".join(f"{printable(k)} {'x'.join(map(str, v))}" for k, v in b["shapes"].items())
            lines.append(f"  #{b['index']}: {shapes}; {b['layers']} layers, arena {fmt_bytes(b['arena_bytes'])}, "
                         f"profiles {', '.join(map(str, b['profiles']))}")
    return lines
