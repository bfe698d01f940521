"""The ``workbench`` command line (build, run, profile, inspect, accuracy, lint, serve, batch, demo),
like trtexec and Polygraphy.

User errors (bad paths, files, models, shapes, feeds, engines, option values) print one line on
stderr and exit 2; ``run --compare`` exits 1 when the outputs differ beyond the tolerances; Ctrl-C
exits 130. Modules: ``parser`` (every option), ``commands`` (build, profile, inspect, demo),
``run`` (the benchmark), ``compare`` (the onnxruntime check), ``common`` (files and numbers),
``calib`` (``--calib*`` options), ``ranges`` (``--min/--opt/--max-shapes``, ``--buckets``),
``accuracy`` (the per-layer accuracy report), ``lint`` (the engine linters), ``serve`` (``serve`` on
Ray Serve and ``batch`` on Ray Data).
"""

from __future__ import annotations

import os
import sys

from ..errors import WorkbenchError
from .common import EXIT_USAGE, CliError, fail, is_engine_file, load_feeds
from .parser import make_parser

__all__ = ["EXIT_USAGE", "CliError", "is_engine_file", "load_feeds", "main", "make_parser"]


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:  # bare `workbench`: what it can do, as a usage error
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    if getattr(args, "fn", None) is None:  # options without a command (e.g. only -h handled above)
        parser.print_usage(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.fn(args) or 0)
    except WorkbenchError as exc:
        return fail(str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__)
    except BrokenPipeError:  # `workbench inspect E | head`: the reader left; not an error
        _silence_stdout()
        return 0
    except MemoryError as exc:
        detail = str(exc).splitlines()[0] if str(exc).strip() else ""
        return fail(f"out of memory{': ' + detail if detail else ''} — try smaller shapes or inputs")
    except OSError as exc:  # unwritable output path, full disk, permission denied
        return fail(f"{exc.strerror or exc}: {exc.filename!r}" if getattr(exc, "filename", None) else str(exc))
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
