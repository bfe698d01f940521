"""``workbench build``'s calibration options (int8 / fp8 ranges): ``--calib``, ``--calib-method``,
``--calib-percentile`` and ``--calib-cache``, made into ``BuilderConfig.calibration``.

Everything that can be checked before the build is: the data path (an .npz or a folder holding
some), the method and percentile, and every file's input names, dtypes and dims (from the .npz
headers, against the model's inputs with ``--shapes`` applied), so a mistake is one line before
any optimization runs.
"""

from __future__ import annotations

import argparse
import os

from ..core.plan import TensorSpec
from ..precision.calibration import METHODS, Calibration, CalibrationTable
from .common import CliError

DEFAULT_METHOD = "minmax"
DEFAULT_PERCENTILE = 99.99


def _percentile(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < x <= 100:
        raise argparse.ArgumentTypeError(f"must be in (0, 100], got {text!r}")
    return x


def add_options(p) -> None:
    p.add_argument("--calib", metavar="PATH",
                   help="calibration data for int8 / fp8 ranges: an .npz of inputs (keys = input names, as "
                        "run --inputs) or a folder of them, one batch per file")
    p.add_argument("--calib-method", choices=list(METHODS),
                   help=f"how ranges are chosen from the data (default: {DEFAULT_METHOD})")
    p.add_argument("--calib-percentile", type=_percentile, metavar="P",
                   help=f"share of |x| kept by --calib-method percentile (default: {DEFAULT_PERCENTILE})")
    p.add_argument("--calib-cache", metavar="FILE",
                   help="calibration cache: reused when it fits the model and method, else written after "
                        "calibrating; alone (without --calib) it must exist")


def calibration(args) -> Calibration | CalibrationTable | None:
    """The ``BuilderConfig.calibration`` the options ask for (paths and settings checked)."""
    if args.calib is None:
        if args.calib_method is not None or args.calib_percentile is not None:
            raise CliError("--calib-method and --calib-percentile need --calib DATA (an .npz or a folder of them)")
        if args.calib_cache is None:
            return None
        if not os.path.lexists(args.calib_cache):
            raise CliError(f"--calib-cache {args.calib_cache!r} does not exist; give --calib DATA to calibrate "
                           "and write it")
        return CalibrationTable.load(args.calib_cache)
    method = args.calib_method or DEFAULT_METHOD
    if args.calib_percentile is not None and method != "percentile":
        raise CliError(f"--calib-percentile is for --calib-method percentile, not {method}")
    percentile = DEFAULT_PERCENTILE if args.calib_percentile is None else args.calib_percentile
    if args.calib_cache is not None and os.path.dirname(os.path.abspath(args.calib_cache)) \
            and not os.path.isdir(os.path.dirname(os.path.abspath(args.calib_cache))):
        raise CliError(f"cannot write calibration cache {args.calib_cache!r}: its folder does not exist")
    return Calibration(args.calib, method=method, percentile=percentile, cache=args.calib_cache)


def check(calib, network, shapes: dict) -> None:
    """Check calibration files against the model's inputs (``--shapes`` applied), headers only."""
    if isinstance(calib, Calibration):
        specs = [TensorSpec(s.name, s.dtype, list(shapes[s.name]) if s.name in shapes else s.shape)
                 for s in network.inputs]
        calib.check_inputs(specs)
