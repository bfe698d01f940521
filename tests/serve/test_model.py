"""One served engine (``workbench.serve.model.EngineModel``) without Ray: the protocol's routes,
inference answers equal to the engine's own, 400s for bad input and the server's counts."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from tests.serve import engines as E
from workbench.core.numerics import rel_err
from workbench.errors import WorkbenchError
from workbench.serve import protocol as P
from workbench.serve.model import EngineModel, model_name


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "dense.wbe"
    E.dense_fixed(path, batch=4)
    m = EngineModel(str(path), context_options={"threads": 1}, max_body_bytes=4096)
    yield m
    m.close()


def call(model, method, path, body=b"", headers=None):
    async def read(limit):
        if len(body) > limit:
            raise P.ProtocolError(f"the body is over {limit} bytes")
        return body

    status, out_headers, out = asyncio.run(model.handle(method, path, headers or {}, read))
    return status, out_headers, out


def test_health_and_metadata(model):
    assert call(model, "GET", "/v2/health/live")[2] == b'{"live": true}'
    assert call(model, "GET", "/v2/health/ready")[2] == b'{"ready": true}'
    server = json.loads(call(model, "GET", "/v2")[2])
    assert server["name"] == "workbench" and "binary_tensor_data" in server["extensions"]
    for path in ("/v2/models/dense", "/v2/models/dense/versions/1"):
        status, _, body = call(model, "GET", path)
        meta = json.loads(body)
        assert status == 200 and meta["name"] == "dense" and meta["platform"] == "workbench_cpu"
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, E.WIDTH]},
                                  {"name": "s", "datatype": "FP32", "shape": [-1, 1]}]
        assert meta["parameters"]["max_batch_size"] == 4
    assert json.loads(call(model, "GET", "/v2/models/dense/ready")[2]) == {"name": "dense", "ready": True}


@pytest.mark.parametrize("method, path, status, message", [
    ("GET", "/v2/models/other", 404, "unknown model 'other'; this server serves 'dense'"),
    ("GET", "/v2/models/dense/versions/7", 404, "has only version 1"),
    ("GET", "/predict", 404, "lives under /v2"),
    ("POST", "/v2/models/dense", 405, "takes GET"),
    ("GET", "/v2/models/dense/infer", 405, "takes POST"),
    ("GET", "/v2/models/dense/explain", 404, "no such endpoint"),
])
def test_routes_that_do_not_exist(model, method, path, status, message):
    got, headers, body = call(model, method, path)
    assert got == status and headers["content-type"] == "application/json"
    assert message in json.loads(body)["error"]


def test_infer_equals_the_engine_row_by_row(model):
    rng = np.random.default_rng(0)
    for rows, binary in ((1, False), (3, True), (9, False)):
        feeds = E.dense_feeds(rng, rows)
        body, headers = P.request_body(feeds, binary=binary, binary_outputs=binary, request_id=f"q{rows}")
        status, out_headers, out = call(model, "POST", "/v2/models/dense/infer", body, headers)
        assert status == 200, out
        got = P.decode_response(out, out_headers)
        want = E.row_by_row(model.ctx, feeds, 4)
        for name in ("y", "z"):
            assert got[name].shape == want[name].shape and rel_err(got[name], want[name]) <= 1e-6
        head = out[: int(out_headers.get(P.HEADER_LENGTH, len(out)))]
        assert json.loads(head)["id"] == f"q{rows}"


def test_bad_input_is_a_400_naming_it_and_the_model_keeps_serving(model):
    good = P.request_body(E.dense_feeds(np.random.default_rng(1), 2))
    bad_shape = P.request_body({"x": np.ones((2, 5), np.float32), "s": np.ones((2, 1), np.float32)})
    cases = [
        (b"not json", {}, "not valid JSON"),
        (bad_shape[0], bad_shape[1], "input 'x' has shape [2, 5]"),
        (b"x" * 5000, {}, "over 4096 bytes"),
        (b"{}", {"content-length": "99999"}, "the body is 99999 bytes; this server takes at most 4096"),
    ]
    for body, headers, message in cases:
        status, _, out = call(model, "POST", "/v2/models/dense/infer", body, headers)
        assert status == 400 and message in json.loads(out)["error"], out
    status, _, _ = call(model, "POST", "/v2/models/dense/infer", *good)
    assert status == 200
    stats = json.loads(call(model, "GET", "/v2/models/dense/stats")[2])["model_stats"][0]
    assert stats["requests"]["400"] >= len(cases) and stats["requests"]["200"] >= 1
    assert stats["latency_ms"]["count"] == sum(stats["requests"].values())
    engine = stats["engine_ms_per_batch"]  # one engine batch per good request here (no batcher)
    assert engine["count"] == sum(stats["batch_sizes"].values()) >= 1 and set(engine) == {"count", "p50", "p90", "p99"}


def test_an_engine_failure_is_a_500_and_not_an_answer(model, monkeypatch):
    def broken(feeds):
        raise RuntimeError("device lost")

    monkeypatch.setattr(model.ctx, "run", broken)
    body, headers = P.request_body(E.dense_feeds(np.random.default_rng(2), 2))
    status, _, out = call(model, "POST", "/v2/models/dense/infer", body, headers)
    assert status == 500 and "device lost" in json.loads(out)["error"]


def test_unservable_engines_and_names(tmp_path):
    assert model_name("/a/b/resnet.v2.wbe") == "resnet.v2"
    path = tmp_path / "m.wbe"
    E.dense_fixed(path, batch=2)
    assert EngineModel(str(path), "custom", check_rows=False).name == "custom"
    with pytest.raises(WorkbenchError):
        EngineModel(str(tmp_path / "missing.wbe"))


def test_an_engine_whose_rows_interact_serves_each_request_alone(tmp_path):
    path = tmp_path / "mixing.wbe"
    E.build(E.mixing_model(), path)
    m = EngineModel(str(path), context_options={"threads": 1})
    try:
        meta = json.loads(call(m, "GET", "/v2/models/mixing")[2])
        assert meta["parameters"]["batched"] is False and "rows interact" in meta["parameters"]["not_batched_because"]
        x = np.random.default_rng(3).standard_normal((3, E.WIDTH)).astype(np.float32)
        status, headers, out = call(m, "POST", "/v2/models/mixing/infer", *P.request_body({"x": x}))
        assert status == 200
        np.testing.assert_allclose(P.decode_response(out, headers)["y"], x - x.mean(axis=0, keepdims=True),
                                   rtol=1e-5, atol=1e-6)
    finally:
        m.close()
