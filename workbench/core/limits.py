"""Structural limits shared by every stage, so that what one stage accepts the next can hold.

``MAX_NESTING``: If / Loop / Scan bodies inside one another. The ONNX loader, the builder and the
engine format use this one number: a model that loads also builds and saves (an engine header
nests about eight JSON levels per graph level, under ``format.container.MAX_JSON_DEPTH``).

``MAX_RANK``: the highest tensor rank a model may declare (NumPy's own limit is 64); a rank-1000
initializer or value is refused at load with the tensor named, not by NumPy deep inside a pass.

``MAX_LOOP_ITERATIONS``: the default cap on the iterations of one Loop or Scan run; a trip count
of 2^62 or a condition that never turns false ends with a clear error instead of running until
killed. ``BuilderConfig(max_loop_iterations=...)`` and ``create_context(max_loop_iterations=...)``
set it.

``MAX_ENGINE_BYTES``: the default for ``BuilderConfig.max_engine_bytes``, the constants an engine
may hold once folding is done; a fold that would pass it keeps its layer, logged with the reason.
"""

from __future__ import annotations

MAX_NESTING = 16
MAX_LOOP_ITERATIONS = 1 << 20
MAX_RANK = 64
MAX_ENGINE_BYTES = 4 << 30
