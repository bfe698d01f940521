"""Frontends: ONNX model loading and the network-definition API."""
