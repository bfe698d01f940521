"""The one pattern/rewrite engine every optimization rule uses (``engine.py``): Rule
(pattern / check / rewrite), Match, Emitter, apply, fixed_point. Optimizer side: imports ``ir``
and the bottom layers, never the passes."""
