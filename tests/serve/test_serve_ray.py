"""``workbench.serve`` on a real local Ray Serve (2 CPUs): the Open Inference Protocol over HTTP with
plain ``requests`` and ``httpx`` clients, dynamic batching under load with every answer checked
against the engine row by row, bad input answered 400 while good requests go on, a DeploymentHandle
for Python callers, and a replica killed mid-load.

Ray's own transport between processes pickles (``allow_pickle``); workbench's code never does."""

from __future__ import annotations

import json
import re
import threading
import time

import numpy as np
import pytest

from tests.serve import engines as E
from tests.serve.conftest import free_port
from workbench.core.numerics import rel_err
from workbench.serve import protocol as P

pytestmark = [pytest.mark.slow, pytest.mark.allow_pickle]
requests = pytest.importorskip("requests")
httpx = pytest.importorskip("httpx")

BATCH = 8  # the engine's fixed batch
TIMEOUT = 60  # seconds any one HTTP request may take


@pytest.fixture(scope="module")
def served(ray_instance, tmp_path_factory):
    import workbench as wb

    path = tmp_path_factory.mktemp("serve") / "dense.wbe"
    E.dense_fixed(path, batch=BATCH)
    server = wb.serve.start(str(path), port=free_port(), replicas=2, batch_wait_ms=10, max_body_bytes=1 << 16)
    ctx = wb.Engine.load(path).create_context(threads=1)
    try:
        yield {"server": server, "ctx": ctx, "metrics_port": ray_instance["metrics_port"]}
    finally:
        server.stop()


def post(url, feeds, **kwargs):
    body, headers = P.request_body(feeds, **kwargs)
    return requests.post(url, data=body, headers=headers, timeout=TIMEOUT)


def check_answer(ctx, feeds, response):
    """The response holds exactly these rows' outputs, as the engine gives them row by row."""
    got = P.decode_response(response.content, response.headers)
    want = E.row_by_row(ctx, feeds, BATCH)
    assert set(got) == set(want)
    for name in want:
        assert got[name].shape == want[name].shape, name
        assert rel_err(got[name], want[name]) <= 1e-6, name


def test_v2_endpoints_with_requests_and_httpx(served):
    server, ctx = served["server"], served["ctx"]
    assert requests.get(f"{server.url}/v2/health/live", timeout=TIMEOUT).json() == {"live": True}
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=TIMEOUT).json() == {"ready": True}
    meta = httpx.get(server.model_url, timeout=TIMEOUT).json()
    assert meta["name"] == "dense" and meta["inputs"][0] == {"name": "x", "datatype": "FP32", "shape": [-1, E.WIDTH]}
    assert requests.get(f"{server.model_url}/ready", timeout=TIMEOUT).json()["ready"] is True
    rng = np.random.default_rng(0)
    feeds = E.dense_feeds(rng, 3)
    r = post(f"{server.model_url}/infer", feeds, request_id="abc")  # JSON in, JSON out
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json()["id"] == "abc" and r.json()["model_name"] == "dense"
    check_answer(ctx, feeds, r)
    # the binary extension with httpx: binary in, binary out
    feeds = E.dense_feeds(rng, 5)
    body, headers = P.request_body(feeds, binary=True, binary_outputs=True)
    r = httpx.post(f"{server.model_url}/infer", content=body, headers=headers, timeout=TIMEOUT)
    assert r.status_code == 200 and P.HEADER_LENGTH in r.headers
    head = json.loads(r.content[: int(r.headers[P.HEADER_LENGTH])])
    assert all("binary_data_size" in o["parameters"] for o in head["outputs"])
    check_answer(ctx, feeds, r)
    # one output, asked for by name, as binary; the other not sent
    r = post(f"{server.model_url}/versions/1/infer", feeds, outputs=["z"], binary_outputs=True)
    got = P.decode_response(r.content, r.headers)
    assert list(got) == ["z"] and rel_err(got["z"], E.row_by_row(ctx, feeds, BATCH)["z"]) <= 1e-6


def test_load_every_client_gets_exactly_its_rows(served):
    server, ctx = served["server"], served["ctx"]
    clients, per_client = 32, 50
    results: list[list] = [[] for _ in range(clients)]

    def client(i):
        rng = np.random.default_rng(100 + i)
        with requests.Session() as session:
            for _ in range(per_client):
                feeds = E.dense_feeds(rng, int(rng.integers(1, 13)))  # some requests exceed the engine's batch
                body, headers = P.request_body(feeds, binary=bool(rng.integers(2)))
                r = session.post(f"{server.model_url}/infer", data=body, headers=headers, timeout=TIMEOUT)
                results[i].append((feeds, r))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    done = [x for per in results for x in per]
    assert len(done) == clients * per_client
    assert {r.status_code for _, r in done} == {200}, {r.status_code: r.text[:200] for _, r in done}
    for feeds, r in done:
        check_answer(ctx, feeds, r)
    rows = sum(len(f["x"]) for f, _ in done)
    # batches formed: the replicas' own counts and Ray's exported histogram both show batches > 1 row
    stats = requests.get(f"{server.model_url}/stats", timeout=TIMEOUT).json()["model_stats"][0]
    assert any(int(size) > 1 for size in stats["batch_sizes"]), stats
    count, single = _histogram(served["metrics_port"], min_sum=rows)
    assert count > single, "no batch of more than one row was exported"


def _histogram(port: int, min_sum: int, timeout: float = 60.0) -> tuple[float, float]:
    """(batches, batches of one row) from Ray's Prometheus export of workbench_batch_rows, once the
    rows counter reaches ``min_sum`` (exports lag the replicas by a report interval; the histogram's
    own _sum is estimated from its buckets, so the exact counter says when everything is in)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except requests.RequestException:
            text = ""
        total = _metric_sum(text, "ray_workbench_rows_total", 'model="dense"')
        if total >= min_sum:
            return (_metric_sum(text, "ray_workbench_batch_rows_count", 'model="dense"'),
                    _metric_sum(text, "ray_workbench_batch_rows_bucket", 'model="dense"', 'le="1.0"'))
        time.sleep(0.5)
    raise AssertionError(f"Ray's metrics never counted {min_sum} rows: {text[-2000:]}")


def _metric_sum(text: str, name: str, *labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(label in line for label in labels):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("body, headers, message", [
    (b'{"inputs": [', {}, "not valid JSON"),
    (json.dumps({"inputs": [{"name": "q", "datatype": "FP32", "shape": [1], "data": [1]}]}).encode(), {},
     "unknown input 'q'"),
    (P.request_body({"x": np.ones((2, E.WIDTH)), "s": np.ones((2, 1))})[0], {}, "input 'x' has datatype 'FP64'"),
    (P.request_body({"x": np.ones((2, 3), np.float32), "s": np.ones((2, 1), np.float32)})[0], {},
     "input 'x' has shape [2, 3]"),
    (P.request_body({"x": np.ones((2, E.WIDTH), np.float32), "s": np.ones((3, 1), np.float32)})[0], {},
     "axis 0 (batch) is 3 but it is 2"),
    (b" " * 70000, {}, "this server takes at most 65536"),
])
def test_bad_input_is_400_json_and_the_server_keeps_serving(served, body, headers, message):
    server, ctx = served["server"], served["ctx"]
    r = requests.post(f"{server.model_url}/infer", data=body, headers=headers, timeout=TIMEOUT)
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    assert message in r.json()["error"], r.json()
    feeds = E.dense_feeds(np.random.default_rng(5), 4)
    r = post(f"{server.model_url}/infer", feeds)
    assert r.status_code == 200
    check_answer(ctx, feeds, r)


def test_bad_and_good_requests_at_once_never_mix(served):
    server, ctx = served["server"], served["ctx"]
    out: list = []

    def client(i):
        rng = np.random.default_rng(300 + i)
        for k in range(10):
            if (i + k) % 3 == 0:
                bad = {"x": np.ones((2, 5), np.float32), "s": np.ones((2, 1), np.float32)}
                out.append((None, post(f"{server.model_url}/infer", bad)))
            else:
                feeds = E.dense_feeds(rng, int(rng.integers(1, 6)))
                out.append((feeds, post(f"{server.model_url}/infer", feeds)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(out) == 80
    for feeds, r in out:
        if feeds is None:
            assert r.status_code == 400 and "input 'x' has shape" in r.json()["error"]
        else:
            assert r.status_code == 200
            check_answer(ctx, feeds, r)


def test_a_deployment_handle_infers_for_python_callers(served):
    server, ctx = served["server"], served["ctx"]
    feeds = E.dense_feeds(np.random.default_rng(6), 11)
    got = server.handle().infer.remote(feeds).result(timeout_s=TIMEOUT)
    want = E.row_by_row(ctx, feeds, BATCH)
    for name in want:
        assert rel_err(got[name], want[name]) <= 1e-6


def test_killing_a_replica_mid_load_gives_errors_not_wrong_answers(served):
    """Runs last in this module: one of the two replicas is killed while 8 clients send requests."""
    import ray
    from ray import serve

    server, ctx = served["server"], served["ctx"]
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                if re.match(r"SERVE_REPLICA::dense#", a["name"])]
    assert len(replicas) == 2
    out: list = []
    stop = threading.Event()

    def client(i):
        rng = np.random.default_rng(500 + i)
        with requests.Session() as session:
            for _ in range(400):
                if stop.is_set():
                    return
                feeds = E.dense_feeds(rng, int(rng.integers(1, 9)))
                body, headers = P.request_body(feeds)
                try:
                    r = session.post(f"{server.model_url}/infer", data=body, headers=headers, timeout=TIMEOUT)
                except requests.RequestException as exc:  # a dropped connection is an error too
                    r = exc
                out.append((feeds, r))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(out) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    victim = replicas[0]
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
    killed_at = len(out)
    while len(out) < killed_at + 150 and time.monotonic() < deadline + 60:
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    ok = errors = 0
    for feeds, r in out:
        if isinstance(r, Exception) or r.status_code != 200:
            errors += 1
            assert isinstance(r, Exception) or r.status_code >= 500, r.text[:200]
        else:
            ok += 1
            check_answer(ctx, feeds, r)  # never a wrong answer
    assert ok > 0
    # the controller replaces the replica; then every request succeeds again
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        states = serve.status().applications["dense"].deployments["dense"].replica_states
        names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
        if states.get("RUNNING") == 2 and victim["name"] not in names:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the killed replica was not replaced: {states}")
    rng = np.random.default_rng(9)
    for _ in range(20):
        feeds = E.dense_feeds(rng, int(rng.integers(1, 9)))
        r = post(f"{server.model_url}/infer", feeds)
        assert r.status_code == 200
        check_answer(ctx, feeds, r)
