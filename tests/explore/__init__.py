"""Tests of the engine explorer (workbench/explore), the replay profile (runtime/cupti.py) and the
profile's trace (runtime/trace.py)."""
