"""Precision studio: calibration, quantization, per-layer accuracy and automatic mixed precision."""
