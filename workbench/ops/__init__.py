"""What ops mean, shared by the optimizer, the precision assigner and the kernels: the op-schema
table (``schema``). Lean side: imports only ``core``, ``errors`` and ``dtypes``."""
