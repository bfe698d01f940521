"""Shared fixtures. Every test runs with pickle disabled: no file format of ours may use it."""

from __future__ import annotations

import os
import pickle

import pytest

from tests.support.gpu import gpu_available

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _no_pickle(*args, **kwargs):
    raise AssertionError("pickle must never be used by workbench")


@pytest.fixture(autouse=True)
def forbid_pickle(monkeypatch, request):
    if request.node.get_closest_marker("allow_pickle"):
        yield
        return
    monkeypatch.setattr(pickle, "loads", _no_pickle)
    monkeypatch.setattr(pickle, "load", _no_pickle)
    yield


def pytest_collection_modifyitems(config, items):
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU with CuPy")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
