"""The ``workbench`` command line (build, run, profile, inspect, demo), like trtexec.

User errors (bad paths, models, shapes, feeds, engines) print one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile

import numpy as np

from .core.precisions import DEVICES, REQUESTABLE
from .errors import WorkbenchError

EXIT_USAGE = 2


class CliError(WorkbenchError):
    pass


def _fail(message: str) -> int:
    print(f"workbench: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _existing_file(path: str, what: str) -> str:
    if not os.path.exists(path):
        raise CliError(f"{what} {path!r} does not exist")
    if os.path.isdir(path):
        raise CliError(f"{what} {path!r} is a directory, not a file")
    return path


def load_feeds(path: str) -> dict[str, np.ndarray]:
    _existing_file(path, "inputs file")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise CliError(f"cannot read inputs file {path!r} as .npz: {exc}") from None


def is_engine_file(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"WBENGINE"


def _load_engine(path: str):
    from .runtime.engine import Engine

    _existing_file(path, "engine")
    if not is_engine_file(path):
        raise CliError(f"{path!r} is not a workbench engine (wrong magic); build one with 'workbench build'")
    return Engine.load(path)


# ---- commands -------------------------------------------------------------------------------

def cmd_build(args) -> int:
    from . import build, load_onnx
    from .builder import BuilderConfig, parse_shapes

    _existing_file(args.model, "model")
    shapes = parse_shapes(args.shapes) if args.shapes is not None else {}
    disable = [d for item in args.disable or [] for d in item.split(",") if d]
    overrides = {}
    for item in args.layer_precision or []:
        name, sep, prec = item.rpartition("=")
        if not sep:
            raise CliError(f"bad --layer-precision {item!r}: expected LAYER=PRECISION")
        overrides[name] = prec
    cfg = BuilderConfig(device=args.device, precision=args.precision, shapes=shapes, disable=disable,
                        layer_precisions=overrides, timing_cache=args.timing_cache,
                        progress=sys.stderr.isatty() and not args.quiet)
    net = load_onnx(args.model)
    engine = build(net, cfg)
    info = engine.save(args.output)
    rep = engine.reports
    print(f"built {args.output}: {len(engine.layers)} layers from {rep['nodes']['before']} ONNX nodes, "
          f"{engine.backend}, {cfg.precision}, {info['size']} bytes, sha256 {info['sha256'][:16]}")
    if "build_ms" in engine.build_stats:
        print(f"build time {engine.build_stats['build_ms'] / 1e3:.2f} s")
    return 0


def cmd_run(args) -> int:
    engine = _load_engine(args.engine)
    feeds = load_feeds(args.inputs)
    ctx = engine.create_context(device=None if args.device == "auto" else args.device)
    outs = ctx.run(feeds)
    outs = {k: _to_host(v) for k, v in outs.items()}
    if args.outputs:
        path = args.outputs if args.outputs.endswith(".npz") else args.outputs + ".npz"  # what np.savez writes
        np.savez(path, **outs)
        print(f"wrote {len(outs)} outputs to {path}")
    for name, v in outs.items():
        arr = np.asarray(v)
        stats = f" mean {float(arr.astype(np.float64).mean()):.6g}" if arr.size and arr.dtype.kind in "fiu" else ""
        print(f"{name}: {arr.dtype} {list(arr.shape)}{stats}")
    return 0


def _to_host(v):
    return v.get() if hasattr(v, "get") and not isinstance(v, np.ndarray) else v


def cmd_profile(args) -> int:
    engine = _load_engine(args.engine)
    feeds = load_feeds(args.inputs) if args.inputs else None
    if args.runs < 1:
        raise CliError("--runs must be at least 1")
    if args.top < 1:
        raise CliError("--top must be at least 1")
    from .runtime.profile import format_profile

    ctx = engine.create_context()
    df = ctx.profile(feeds, runs=args.runs)
    print(format_profile(df, top=args.top))
    if args.csv:
        df.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0


def cmd_inspect(args) -> int:
    _existing_file(args.path, "file")
    if is_engine_file(args.path):
        engine = _load_engine(args.path)
        if args.json:
            print(json.dumps(engine.describe(), indent=1, default=str))
        else:
            tables = engine.report()
            for name in ("summary", "layers", "precisions", "memory"):
                print(f"== {name} ==")
                print(tables[name].to_string(index=False))
            fus = tables["fusions"]
            if len(fus):
                print("== fusions ==")
                print(fus.groupby(["rule", "status"]).size().rename("count").reset_index().to_string(index=False))
        return 0
    from . import load_onnx

    net = load_onnx(args.path)
    summary = net.summary()
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"model {args.path}: {summary['nodes']} nodes, {summary['parameters']} parameters, opsets {summary['opsets']}")
        for i in summary["inputs"]:
            print(f"  input  {i['name']}: {i['dtype']} {i['shape']}")
        for o in summary["outputs"]:
            print(f"  output {o['name']}: {o['dtype']} {o['shape']}")
        print("  ops: " + ", ".join(f"{k} {v}" for k, v in summary["op_histogram"].items()))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    if args.runs < 1:
        raise CliError("--runs must be at least 1")
    return run_demo(output=args.output, runs=args.runs)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit 2 (like every other user error)."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="workbench", description="Optimize ONNX models into fast inference engines.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    b = sub.add_parser("build", help="optimize a model and write an engine")
    b.add_argument("model")
    b.add_argument("-o", "--output", required=True, help="engine file to write")
    b.add_argument("--device", default="auto", choices=list(DEVICES))
    b.add_argument("--precision", default="fp32", choices=list(REQUESTABLE))
    b.add_argument("--shapes", help="fix input shapes: name:DxD[,name:DxD]")
    b.add_argument("--disable", action="append", help="pass or fusion rule to skip (repeatable, comma-separated)")
    b.add_argument("--layer-precision", action="append", help="LAYER=PRECISION override (repeatable)")
    b.add_argument("--timing-cache", help="persistent autotuning cache file (GPU)")
    b.add_argument("-q", "--quiet", action="store_true")
    b.set_defaults(fn=cmd_build)

    r = sub.add_parser("run", help="run an engine on inputs from an .npz file")
    r.add_argument("engine")
    r.add_argument("--inputs", required=True, help=".npz whose keys are input names")
    r.add_argument("--outputs", help=".npz to write outputs to")
    r.add_argument("--device", default="auto", choices=list(DEVICES))
    r.set_defaults(fn=cmd_run)

    pr = sub.add_parser("profile", help="per-layer timing of an engine")
    pr.add_argument("engine")
    pr.add_argument("--inputs", help=".npz of inputs (default: random data of the engine's shapes)")
    pr.add_argument("--runs", type=int, default=20)
    pr.add_argument("--top", type=int, default=15)
    pr.add_argument("--csv", help="write the full table as CSV")
    pr.set_defaults(fn=cmd_profile)

    i = sub.add_parser("inspect", help="describe a model or an engine")
    i.add_argument("path")
    i.add_argument("--json", action="store_true")
    i.set_defaults(fn=cmd_inspect)

    d = sub.add_parser("demo", help="optimize, run and profile the embedded ResNet-50")
    d.add_argument("-o", "--output", default=os.path.join("out", "resnet50.wbe"))
    d.add_argument("--runs", type=int, default=5)
    d.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except WorkbenchError as exc:
        return _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except BrokenPipeError:  # `workbench inspect E | head`: the reader left; not an error
        _silence_stdout()
        return 0
    except OSError as exc:  # unwritable output path, full disk, permission denied
        return _fail(f"{exc.strerror or exc}: {exc.filename!r}" if getattr(exc, "filename", None) else str(exc))
    except KeyboardInterrupt:
        print("workbench: interrupted", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's flush at exit does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
