"""GPU tactic sources: the ways a layer can run on an NVIDIA GPU (cuBLASLt, cuDNN, cuBLAS through
CuPy, NVRTC-generated kernels, CuPy, the reference kernels on CuPy), behind one interface
(``tactic.py``) and listed in ``sources.py``. The builder chooses among them; the runtime rebuilds
the chosen one from the engine. Nothing here imports CuPy or a CUDA library at module import time.

May import: ``core``, ``ops``, ``kernels.reference``, ``format``, ``errors``, ``dtypes``; never the
runtime or the optimizer, never onnx.
"""
