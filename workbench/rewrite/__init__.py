"""The one pattern/rewrite engine every optimization rule uses (``engine.py``): Rule (pattern /
check / rewrite), Match, Emitter, apply, fixed_point, and the escaping-use check every rule gets.

May import: ``ir`` (value questions, attributes, typing of created nodes, provenance) and the bottom
layers; never the passes (the rules live there and import this), precision or builder.
"""
