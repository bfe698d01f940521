"""The GPU runtime: runs an engine built for the GPU through CuPy and the GPU tactic sources.

``setup.py`` places the arena (``plan.arena``), uploads weights once per (name, type) and rebuilds
every layer's kernel from ``layer.tactic`` / ``layer.tactic_config`` / ``layer.binaries`` through
the tactic registry (``kernels/cuda/sources.py``); ``graphs.py`` splits the layers into segments and
captures / replays CUDA graphs; ``context.py`` is the GpuExecutionContext (run, IO binding, direct
input casts, CUDA-event timing through ``kernels/cuda/events.py``); ``bucketed.py`` runs an engine
built as buckets (shape ranges): one such context per bucket over one shared arena and stream.

May import: ``core``, ``ops``, ``kernels`` (reference and cuda), ``format``, ``errors``, ``dtypes``,
the rest of ``runtime``, NumPy and CuPy (CuPy only inside functions, so that importing this package
needs no GPU). Never ``ir``, ``passes``, ``builder``, ``precision``, ``frontends``, ``rewrite``,
``ui``, onnx, onnx_ir or onnxscript: a GPU deployment loads and runs engines without the optimizer.
"""
