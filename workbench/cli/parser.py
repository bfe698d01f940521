"""The argument parser of every command: each option with its help and its default."""

from __future__ import annotations

import argparse
import os
import sys

from .._version import __version__
from ..core.precisions import DEVICES, REQUESTABLE
from .common import EXIT_USAGE


class _Formatter(argparse.HelpFormatter):
    """Help that shows every option's default (argparse's ArgumentDefaultsHelpFormatter, minus the
    noise of "(default: None)" on options that have none)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "%(default)" in text or default is None or default is False or default is argparse.SUPPRESS \
                or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit 2 (like every other user error)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _whole(minimum: int):
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {n}")
        return n

    return parse


_positive, _count = _whole(1), _whole(0)


def _nonneg_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not x >= 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of 0 or more, got {text!r}")
    return x


def _add_threads(p) -> None:
    p.add_argument("--threads", type=_positive, metavar="N",
                   help="threads for the CPU kernels and BLAS (default: the cores available to this process)")


def _size(text: str) -> int:
    from ..core.budget import parse_size
    from ..errors import WorkbenchError

    try:
        return parse_size(text, "--memory-budget")
    except WorkbenchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_budget(p) -> None:
    p.add_argument("--memory-budget", type=_size, metavar="SIZE",
                   help="bytes the work may hold at once, e.g. 512M or 4G (default: half the memory available)")


def _add_device(p) -> None:
    p.add_argument("--device", default="auto", choices=list(DEVICES),
                   help="device to run on; auto takes the one the engine was built for")


def make_parser() -> argparse.ArgumentParser:
    from . import accuracy, calib, commands, lint, ranges

    p = _Parser(prog="workbench", description="Optimize ONNX models into fast inference engines.")
    p.add_argument("--version", action="version", version=f"workbench {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    b = sub.add_parser("build", help="optimize a model and write an engine",
                       description="Optimize an ONNX model and write an engine file.")
    b.add_argument("model", help="the ONNX model (.onnx)")
    b.add_argument("-o", "--output", required=True, help="engine file to write")
    b.add_argument("--device", default="auto", choices=list(DEVICES),
                   help="device to build for; auto takes the GPU when one is present")
    b.add_argument("--precision", default="fp32", choices=list(REQUESTABLE), help="default precision of the layers")
    b.add_argument("--shapes", metavar="NAME:DxD[,...]",
                   help="fix input shapes, e.g. input:1x3x224x224,mask:1x128 (default: the model's own)")
    ranges.add_options(b)
    b.add_argument("--disable", action="append", metavar="NAME[,NAME]",
                   help="pass or fusion rule to skip (repeatable, comma-separated); '--disable help' lists the names")
    b.add_argument("--layer-precision", action="append", metavar="LAYER=PRECISION",
                   help="precision of one layer or ONNX node (repeatable)")
    b.add_argument("--timing-cache", metavar="FILE", help="persistent autotuning cache file (GPU builds)")
    b.add_argument("--strict-precision", action="store_true",
                   help="int8 / fp8 on the GPU: keep every layer that can take the precision there, even where "
                        "fp16 measures faster (default: the faster of the two per layer, as TensorRT chooses)")
    calib.add_options(b)
    accuracy.add_build_options(b)
    _add_threads(b)
    _add_budget(b)
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    b.set_defaults(fn=commands.cmd_build)

    r = sub.add_parser("run", help="run an engine: outputs, latency and throughput, optional comparison",
                       description="Run an engine on random seeded inputs (or --inputs), time it through its "
                                   "execution context and, with --compare, check its outputs against onnxruntime.")
    r.add_argument("engine", help="the engine file")
    r.add_argument("--inputs", metavar="FEEDS.npz",
                   help=".npz whose keys are input names (default: random inputs of the engine's shapes)")
    r.add_argument("--shapes", metavar="NAME:DxD[,...]",
                   help="shapes of the random inputs for dynamic dimensions, e.g. x:8x128")
    r.add_argument("--seed", type=_count, default=0, help="seed of the random inputs")
    r.add_argument("--outputs", metavar="OUT.npz", help=".npz to write the outputs to")
    r.add_argument("--iterations", type=_positive, default=10, metavar="N", help="timed runs (at least)")
    r.add_argument("--warmup", type=_count, default=1, metavar="N", help="untimed runs before timing")
    r.add_argument("--duration", type=_nonneg_float, default=0.0, metavar="SECONDS",
                   help="keep timing until the timed runs add up to this many seconds (0: just --iterations)")
    r.add_argument("--compare", choices=["onnxruntime"],
                   help="run the engine's source model through this runtime on the same inputs and compare")
    r.add_argument("--model", metavar="MODEL.onnx",
                   help="the ONNX model for --compare (default: the source recorded in the engine)")
    r.add_argument("--atol", type=_nonneg_float, default=1e-4, help="absolute tolerance of --compare")
    r.add_argument("--rtol", type=_nonneg_float, default=1e-4, help="relative tolerance of --compare")
    r.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    _add_device(r)
    _add_threads(r)
    _add_budget(r)
    r.set_defaults(fn=commands.cmd_run)

    pr = sub.add_parser("profile", help="per-layer timing of an engine",
                        description="Time every layer of an engine and print the slowest ones.")
    pr.add_argument("engine", help="the engine file")
    pr.add_argument("--inputs", metavar="FEEDS.npz",
                    help=".npz of inputs (default: random data of the engine's shapes)")
    pr.add_argument("--runs", type=_positive, default=20, metavar="N", help="timed runs")
    pr.add_argument("--top", type=_positive, default=15, metavar="N", help="slowest layers to print")
    pr.add_argument("--csv", metavar="FILE", help="write the full table as CSV")
    pr.add_argument("--trace", metavar="FILE", help="write a Chrome trace (chrome://tracing, Perfetto)")
    pr.add_argument("--json", action="store_true", help="print the full profile as one JSON object")
    pr.add_argument("--mode", choices=["replay", "events"],
                    help="GPU per-layer timing: replay (CUPTI kernel activity of the replayed CUDA graph; the default "
                         "when CUPTI is available) or events (CUDA events around eager launches)")
    _add_threads(pr)
    _add_budget(pr)
    pr.set_defaults(fn=commands.cmd_profile)

    i = sub.add_parser("inspect", help="describe a model or an engine",
                       description="Describe an ONNX model or an engine (layers, fusions with reasons, memory).")
    i.add_argument("path", help="an ONNX model or an engine file")
    i.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    i.set_defaults(fn=commands.cmd_inspect)

    accuracy.add_command(sub, _positive, _add_threads, _add_budget)
    lint.add_command(sub, _positive, _add_threads, _add_budget)
    from .serve import add_commands as add_serve_commands

    add_serve_commands(sub, _positive, _nonneg_float)

    d = sub.add_parser("demo", help="optimize, run and profile the embedded ResNet-50",
                       description="Optimize, run and profile the embedded ResNet-50.")
    d.add_argument("-o", "--output", default=os.path.join("out", "resnet50.wbe"), help="engine file to write")
    d.add_argument("--runs", type=_positive, default=5, metavar="N", help="timed runs of the profile")
    d.set_defaults(fn=commands.cmd_demo)
    return p
