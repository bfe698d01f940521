"""``workbench accuracy ENGINE --inputs X.npz|DIR [--json] [--top N]`` and ``workbench build --precision
best --accuracy-budget B --calib DIR``: the table and its top contributors, the JSON, the candidates
table; every mistake exits 2 with one line."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import workbench as wb
from workbench.cli import main
from tests.precision import accuracy_models as M
from tests.support.cli import assert_user_error, run_cli


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """mlp.onnx; e16.wbe (fp16 CPU engine); other.wbe (other layers); x.npz; data/ with 6 batches;
    empty/; wrong files."""
    tmp = tmp_path_factory.mktemp("accuracy_cli")
    (tmp / "mlp.onnx").write_bytes(M.mlp())
    wb.build(wb.load_onnx(M.mlp()), wb.BuilderConfig(device="cpu", precision="fp16")).save(tmp / "e16.wbe")
    feeds = M.feeds(6)
    np.savez(tmp / "x.npz", **feeds[0])
    (tmp / "data").mkdir()
    for i, f in enumerate(feeds):
        np.savez(tmp / "data" / f"b{i}.npz", **f)
    (tmp / "empty").mkdir()
    np.savez(tmp / "wrong_name.npz", z=feeds[0]["x"])
    np.savez(tmp / "wrong_shape.npz", x=np.ones((4, 31), np.float32))
    np.save(tmp / "single.npy", feeds[0]["x"])
    (tmp / "notanengine.wbe").write_bytes(b"definitely not an engine")
    # unoptimized: its layers are not the fused ones of e16.wbe
    wb.build(wb.load_onnx(M.mlp()), wb.BuilderConfig(device="cpu", optimize=False)).save(tmp / "other.wbe")
    return tmp


def cli(capsys, *args):
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_table_names_the_top_contributors(work, capsys):
    code, out, err = cli(capsys, "accuracy", work / "e16.wbe", "--inputs", work / "x.npz", "--top", "2")
    assert code == 0, err
    report = wb.Engine.load(work / "e16.wbe").accuracy(dict(np.load(work / "x.npz")))
    top = report.top(2)
    assert "over 1 feed" in out and f"output y: rel err {report.error:.2e}" in out
    assert "top contributors: " + top[0]["layer"] in out
    assert all(r["layer"] in out for r in top) and report.top(3)[2]["layer"] not in out.split("top contributors")[0]
    assert "fc1" in out  # ONNX node names


def test_json_and_a_folder_of_feeds(work, capsys):
    code, out, err = cli(capsys, "accuracy", work / "e16.wbe", "--inputs", work / "data", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["feeds"] == 6 and len(d["layers"]) == 3 and d["first_nonfinite"] is None
    assert d["layers"][0]["onnx_nodes"] == ["fc1", "relu1"] and d["top"][0] == d["layers"][
        max(range(3), key=lambda i: d["layers"][i]["output_err"])]["layer"]


def test_random_inputs_without_inputs(work, capsys):
    code, out, err = cli(capsys, "accuracy", work / "e16.wbe", "--no-impact")
    assert code == 0, err
    assert "over 1 feed" in out


def test_impact_runs_over_a_time_budget_are_skipped_and_said(work, capsys):
    code, out, err = cli(capsys, "accuracy", work / "e16.wbe", "--inputs", work / "x.npz", "--impact-seconds", "1e-12")
    assert code == 0, err
    assert "error at the outputs per layer: skipped" in out and "1e-12 s budget" in out
    assert "layers by the error they add at their own output" in out
    code, out, err = cli(capsys, "accuracy", work / "e16.wbe", "--inputs", work / "x.npz", "--impact-seconds", "1e6",
                         "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["engine"]["impact"] == "measured" and all(r["output_err"] is not None for r in d["layers"])


@pytest.mark.parametrize("args,words", [
    (["accuracy", "{w}/e16.wbe", "--impact-seconds", "0"], ["--impact-seconds"]),
    (["accuracy", "{w}/e16.wbe", "--impact-seconds", "5", "--no-impact"], ["--no-impact", "--impact-seconds"]),
    (["accuracy", "{w}/nope.wbe"], ["does not exist"]),
    (["accuracy", "{w}/notanengine.wbe"], ["not a workbench engine"]),
    (["accuracy", "{w}/e16.wbe", "--inputs", "{w}/missing.npz"], ["missing.npz", "not exist"]),
    (["accuracy", "{w}/e16.wbe", "--inputs", "{w}/empty"], ["no .npz"]),
    (["accuracy", "{w}/e16.wbe", "--inputs", "{w}/wrong_name.npz"], ["'x'"]),
    (["accuracy", "{w}/e16.wbe", "--inputs", "{w}/wrong_shape.npz"], ["x"]),
    (["accuracy", "{w}/e16.wbe", "--inputs", "{w}/single.npy"], ["single .npy"]),
    (["accuracy", "{w}/e16.wbe", "--top", "0"], ["--top"]),
    (["accuracy", "{w}/e16.wbe", "--reference", "{w}/other.wbe"], ["--reference", "layers"]),
    (["build", "{w}/mlp.onnx", "-o", "{w}/o.wbe", "--device", "cpu", "--precision", "fp16",
      "--accuracy-budget", "0.01"], ["precision 'best'"]),
    (["build", "{w}/mlp.onnx", "-o", "{w}/o.wbe", "--device", "cpu", "--precision", "best",
      "--accuracy-budget", "-1"], ["--accuracy-budget"]),
    (["build", "{w}/mlp.onnx", "-o", "{w}/o.wbe", "--device", "cpu", "--precision", "best",
      "--accuracy-budget", "0.01", "--calib", "{w}/empty"], ["empty"]),
])
def test_mistakes_exit_2_with_one_line(work, capsys, args, words):
    code, _, err = cli(capsys, *[a.format(w=work) for a in args])
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])
    assert not (work / "o.wbe").exists()


def test_build_best_under_a_budget_prints_the_candidates(work, capsys):
    out_path = work / "best.wbe"
    code, out, err = cli(capsys, "build", work / "mlp.onnx", "-o", out_path, "--device", "cpu", "--precision", "best",
                         "--accuracy-budget", "1e-3", "--calib", work / "data", "-q")
    assert code == 0, err
    rep = wb.Engine.load(out_path).reports["mixed_precision"]
    assert rep["budget"] == 1e-3 and rep["error"]["held_out"] <= 1e-3 and rep["feeds"]["total"] == 6
    assert "candidates tried (latency vs error):" in out and "uniform fp16" in out
    assert re.search(r"search time [0-9.]+ s: [0-9]+ builds [0-9.]+ s, sensitivities [0-9.]+ s", out), out
    assert f"{rep['below_fp32']} of {rep['layers']} layers below fp32" in out


def test_a_subprocess_error_is_one_line(work):
    proc = run_cli("accuracy", work / "e16.wbe", "--inputs", work / "wrong_name.npz")
    assert_user_error(proc, "missing input 'x'")
