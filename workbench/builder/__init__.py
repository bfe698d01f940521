"""The builder: Network + BuilderConfig -> Engine (the last stage of the optimizer).

``builder.py`` lists the stages in order: input shapes (``shapes.py``) -> the passes -> lowering to a
plan (``lower.py``) -> cost estimates (``cost.py``) -> precision and tactics by the target
(``targets/``; GPU: precision -> ``layout.py`` -> ``autotune.py`` with ``timing_cache.py``) ->
memory plan (``memory.py``) -> Engine. ``config.py``: every knob; ``progress.py``: the stage names
a progress bar or callback sees. ``profiles.py`` / ``profile_build.py``: shape ranges (profiles and
their buckets, each bucket a static build); ``mixed.py`` / ``mixed_search.py``: automatic mixed
precision under an accuracy budget (``precision="best"`` with ``accuracy_budget``); ``front.py``:
the lowered plan shared by builds of one network that differ only after lowering.

May import every layer above it (``core``, ``ops``, ``kernels``, ``format``, ``runtime``, ``ir``,
``frontends``, ``rewrite``, ``passes``, ``precision``); never the CLI, the UI or the public API.
"""

from .builder import Builder, build
from .config import BuilderConfig, parse_shapes
from .front import FrontCache

__all__ = ["Builder", "BuilderConfig", "FrontCache", "build", "parse_shapes"]
