"""IPython magics: ``%load_ext workbench`` gives

    %wb_open MODEL [--device cpu|gpu|auto] [--precision P] [--shapes in:1x3x224x224] [--build]
    %wb_profile ENGINE [--runs N]      # ENGINE: a saved .wbe path or the name of an Engine variable

Each returns the Workbench app, so it shows as the cell's output."""

from __future__ import annotations

import argparse
import shlex

import workbench as wb

from ..core.precisions import DEVICES


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # a usage error should be one line in the notebook, not SystemExit
        raise ValueError(f"{self.prog}: {message}")


def _open_parser() -> _Parser:
    p = _Parser(prog="%wb_open", add_help=False)
    p.add_argument("model")
    p.add_argument("--device", default="auto", choices=list(DEVICES))
    p.add_argument("--precision", default="fp32")
    p.add_argument("--shapes", default="")
    p.add_argument("--build", action="store_true")
    return p


def _profile_parser() -> _Parser:
    p = _Parser(prog="%wb_profile", add_help=False)
    p.add_argument("engine")
    p.add_argument("--runs", type=int, default=10)
    return p


def wb_open(line: str, user_ns: dict | None = None):
    from .app import Workbench

    a = _open_parser().parse_args(shlex.split(line))
    shapes = wb.parse_shapes(a.shapes) if a.shapes else None
    model = (user_ns or {}).get(a.model, a.model)  # a Network variable or a path
    return Workbench(model, device=a.device, precision=a.precision, shapes=shapes, build=a.build)


def wb_profile(line: str, user_ns: dict | None = None):
    from .app import Workbench

    a = _profile_parser().parse_args(shlex.split(line))
    engine = (user_ns or {}).get(a.engine)
    if not isinstance(engine, wb.Engine):
        engine = wb.Engine.load(a.engine)
    app = Workbench(engine)
    app.profile_tab.runs.value = a.runs
    app.profile_tab.run()
    app.tabs.selected_index = 3  # the Profile tab
    return app


def load_ipython_extension(ipython) -> None:
    ipython.register_magic_function(lambda line: wb_open(line, ipython.user_ns), "line", "wb_open")
    ipython.register_magic_function(lambda line: wb_profile(line, ipython.user_ns), "line", "wb_profile")
