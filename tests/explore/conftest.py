"""Small CPU engines of one model (tests/models/resnet_legacy: 17 ONNX nodes) built once per session,
and profiles with chosen times (``profile_table``), so that views can be checked number by number."""

from __future__ import annotations

import pytest

import workbench as wb
from tests.support.exporter_models import load_io, model_path
from workbench.runtime.profile import profile_table

MODEL = "resnet_legacy"


@pytest.fixture(scope="session")
def feeds():
    return load_io(MODEL)[0]


def _build(feeds, **cfg):
    return wb.build(wb.load_onnx(model_path(MODEL)),
                    wb.BuilderConfig(device="cpu", shapes={k: v.shape for k, v in feeds.items()}, **cfg))


@pytest.fixture(scope="session")
def fp32(feeds):
    return _build(feeds)


@pytest.fixture(scope="session")
def fp32_split(feeds):
    """fp32 with the conv epilogue fusion off: every Conv+Relu of ``fp32`` is two layers here."""
    return _build(feeds, disable=["conv_epilogue"])


@pytest.fixture(scope="session")
def fp16(feeds):
    return _build(feeds, precision="fp16")


def synthetic_profile(engine, ms_of=lambda i, layer: 0.1 + 0.01 * i, e2e: float | None = None):
    """A profile of ``engine`` whose layer ``i`` took ``ms_of(i, layer)`` ms in each of 3 runs."""
    per = [[ms_of(i, layer)] * 3 for i, layer in enumerate(engine.layers)]
    total = sum(p[0] for p in per)
    return profile_table(engine, per, [e2e or total] * 3, device="cpu", note="synthetic")
