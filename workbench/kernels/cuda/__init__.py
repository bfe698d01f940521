"""GPU kernels and the GPU build target. Nothing here imports CuPy at module import time."""
