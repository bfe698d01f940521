"""The builder: Network + BuilderConfig -> Engine (the last stage of the optimizer).

``builder.py`` lists the stages in order: input shapes (``shapes.py``) -> the passes -> lowering to a
plan (``lower.py``) -> cost estimates (``cost.py``) -> precision and tactics by the target
(``targets/``; GPU: precision -> ``layout.py`` -> ``autotune.py`` with ``timing_cache.py``) ->
memory plan (``memory.py``) -> Engine. ``config.py``: every knob; ``progress.py``: the stage names
a progress bar or callback sees.

May import every layer above it (``core``, ``ops``, ``kernels``, ``format``, ``runtime``, ``ir``,
``frontends``, ``rewrite``, ``passes``, ``precision``); never the CLI, the UI or the public API.
"""

from .builder import Builder, build
from .config import BuilderConfig, parse_shapes

__all__ = ["Builder", "BuilderConfig", "build", "parse_shapes"]
