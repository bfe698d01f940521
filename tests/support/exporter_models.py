"""The exporter-produced test models in tests/models (see tests/models/README.md)."""

from __future__ import annotations

import json
import os

import numpy as np

from tests.support.paths import MODELS

MODELS_DIR = MODELS


def manifest() -> list[dict]:
    with open(os.path.join(MODELS_DIR, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)["models"]


def model_names() -> list[str]:
    return [m["name"] for m in manifest()]


def entry(name: str) -> dict:
    return next(m for m in manifest() if m["name"] == name)


def model_path(name: str) -> str:
    return os.path.join(MODELS_DIR, entry(name)["file"])


def load_io(name: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(inputs by name, onnxruntime reference outputs by name)."""
    with np.load(os.path.join(MODELS_DIR, entry(name)["data"]), allow_pickle=False) as data:
        inputs = {k: data[k] for k in data.files if not k.startswith("output:")}
        outputs = {k[len("output:"):]: data[k] for k in data.files if k.startswith("output:")}
    return inputs, outputs


def shapes_of(inputs: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in inputs.items()}


