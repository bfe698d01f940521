"""The ``serve`` and ``batch`` commands: one-line errors before Ray starts, a clear message without
Ray, workbench importable without Ray, and ``workbench serve`` answering until Ctrl-C."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.serve import engines as E
from tests.serve.conftest import free_port
from tests.support.paths import REPO
from workbench.cli import main


@pytest.fixture(scope="module")
def engine_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "dense.wbe"
    E.dense_fixed(path, batch=4)
    return str(path)


def test_workbench_imports_and_builds_without_ray():
    code = ("import sys; sys.modules['ray'] = None\n"
            "import workbench as wb, workbench.serve, workbench.batch, workbench.cli\n"
            "from workbench.serve.batching import batch_layout\n"
            "try:\n    wb.serve.start('x.wbe')\nexcept wb.WorkbenchError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install workbench[serve]" in out.stdout


def test_without_ray_the_commands_say_how_to_install_it(engine_path, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["serve", engine_path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("pip install workbench[serve]") and len(err.splitlines()) == 1
    assert main(["batch", engine_path, "--inputs", str(tmp_path), "--outputs", str(tmp_path / "o")]) == 2
    assert "pip install workbench[serve]" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["serve", "missing.wbe"], "engine 'missing.wbe' does not exist"),
    (["serve", "ENGINE", "--port", "0"], "must be at least 1"),
    (["serve", "ENGINE", "--max-body-mb", "0"], "--max-body-mb must be more than 0"),
    (["serve", "ENGINE", "--max-ongoing", "0"], "must be at least 1"),
    (["batch", "ENGINE", "--inputs", "nowhere", "--outputs", "o"], "inputs 'nowhere' does not exist"),
    (["batch", "ENGINE", "--outputs", "o"], "the following arguments are required: --inputs"),
])
def test_user_errors_are_one_line(engine_path, args, message, capsys):
    args = [engine_path if a == "ENGINE" else a for a in args]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err


def test_a_port_in_use_is_refused(engine_path, capsys):
    import socket

    from workbench.serve.ray_support import port_free

    pytest.importorskip("ray")
    import ray

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert not port_free("127.0.0.1", port)
        if ray.is_initialized():
            pytest.skip("Ray is already running in this process (the port is checked only for a new local instance)")
        assert main(["serve", engine_path, "--port", str(port)]) == 2
    assert port_free("127.0.0.1", port)
    assert "is in use; pick another with --port" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.allow_pickle
def test_serve_answers_until_ctrl_c(ray_instance, engine_path, monkeypatch, capsys):
    import requests

    import workbench.cli.serve as cli_serve
    from workbench.serve import protocol as P

    port = free_port()
    seen = {}

    def use_then_ctrl_c():  # instead of waiting for Ctrl-C: use the server, then press Ctrl-C
        url = f"http://127.0.0.1:{port}/v2/models/dense"
        seen["meta"] = requests.get(url, timeout=60).json()
        body, headers = P.request_body({"x": np.ones((2, E.WIDTH), np.float32), "s": np.ones((2, 1), np.float32)})
        seen["infer"] = requests.post(url + "/infer", data=body, headers=headers, timeout=60)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_serve, "wait_for_ctrl_c", use_then_ctrl_c)
    assert main(["serve", engine_path, "--port", str(port), "--replicas", "1", "--batch-wait-ms", "1"]) == 0
    out = capsys.readouterr().out
    assert f"serving model dense at http://127.0.0.1:{port}/v2/models/dense" in out and "curl -X POST" in out
    assert seen["meta"]["name"] == "dense" and seen["infer"].status_code == 200
    from ray import serve

    assert "dense" not in serve.status().applications  # Ctrl-C took the model down


def test_a_replica_holds_several_batches_so_bursts_queue_in_its_batcher_not_in_serves_router(engine_path):
    pytest.importorskip("ray")
    import workbench as wb
    from workbench.serve import default_max_ongoing

    # no Ray instance is needed to make the application; its deployment carries the options
    held = wb.serve.deployment(engine_path)._bound_deployment.max_ongoing_requests
    assert held == default_max_ongoing(4) == 64  # the engine's batch is 4
    assert default_max_ongoing(32) == 256
    assert wb.serve.deployment(engine_path, max_batch=16)._bound_deployment.max_ongoing_requests == 128
    assert wb.serve.deployment(engine_path, max_ongoing_requests=7)._bound_deployment.max_ongoing_requests == 7
    with pytest.raises(wb.WorkbenchError, match="max_ongoing_requests must be a positive whole number"):
        wb.serve.deployment(engine_path, max_ongoing_requests=0)
