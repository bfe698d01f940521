"""The engine file: ``container`` (checksummed header + aligned blobs, no pickle) and ``serialize``
(Plan <-> header and blobs). Lean side: imports only ``core``, ``errors`` and ``dtypes``."""
