"""``workbench build --min-shapes/--opt-shapes/--max-shapes [--buckets]``: the engine records the
ranges, ``inspect`` shows them, ``run`` refuses a shape outside them with exit 2 and one line; misuse
of the options is exit 2 with one line too. Most calls go through ``cli.main`` in this process (the
same code path as the console script, minus a Python start); one runs the real command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support.cli import assert_user_error, run_cli, small_model
from workbench.cli import main

RANGE = ["--min-shapes", "x:1x4", "--opt-shapes", "x:2x4", "--max-shapes", "x:8x4"]


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(result, *words) -> None:
    code, _, err = result
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("ranges")
    small_model(d / "m.onnx")
    for name, extra in (("r.wbe", []), ("b.wbe", ["--buckets", "2,8"])):
        assert main([str(a) for a in ("build", d / "m.onnx", "-o", d / name, "--device", "cpu", "-q", *RANGE, *extra)]) == 0
    return d


def test_build_reports_each_bucket(capsys, tmp_path):
    small_model(tmp_path / "m.onnx")
    code, out, err = cli(capsys, "build", tmp_path / "m.onnx", "-o", tmp_path / "b.wbe", "--device", "cpu", *RANGE,
                         "--buckets", "2,8")
    assert code == 0, err
    assert "bucket x 8x4:" in out and "bucket x 2x4:" in out  # per-bucket build time


def test_inspect_shows_profiles_and_buckets(built, capsys):
    code, out, err = cli(capsys, "inspect", built / "r.wbe")
    assert code == 0, err
    assert "== profiles ==" in out and "x [1, 4]..[8, 4] (opt [2, 4])" in out
    d = json.loads(cli(capsys, "inspect", built / "b.wbe", "--json")[1])
    assert d["profiles"][0]["ranges"] == {"x": [[1, 4], [2, 4], [8, 4]]}
    assert [b["shapes"]["x"] for b in d["buckets"]] == [[8, 4], [2, 4]] and d["buckets"][0]["batch"] == 8
    assert "== buckets (batch padded up to the next bucket) ==" in cli(capsys, "inspect", built / "b.wbe")[1]


@pytest.mark.parametrize("engine", ["r.wbe", "b.wbe"])
def test_run_inside_and_outside_the_range(built, engine, tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    code, _, err = cli(capsys, "run", built / engine, "--inputs", tmp_path / "in.npz", "--outputs", tmp_path / "out.npz",
                       "--iterations", "1")
    assert code == 0, err
    with np.load(tmp_path / "out.npz") as out:
        assert out["y"].shape == (3, 3)
    np.savez(tmp_path / "big.npz", x=np.ones((9, 4), np.float32))
    one_line_error(cli(capsys, "run", built / engine, "--inputs", tmp_path / "big.npz"), "'x'", "[9, 4]", "[1, 4]..[8, 4]")
    np.savez(tmp_path / "rank.npz", x=np.ones((2, 4, 1), np.float32))
    one_line_error(cli(capsys, "run", built / engine, "--inputs", tmp_path / "rank.npz"), "'x'", "rank 3", "[1, 4]..[8, 4]")
    # random inputs at given shapes take the range checks too
    one_line_error(cli(capsys, "run", built / engine, "--shapes", "x:20x4"), "'x'", "[20, 4]")


def test_the_command_exits_2_with_one_line(built, tmp_path):
    np.savez(tmp_path / "big.npz", x=np.ones((9, 4), np.float32))
    assert_user_error(run_cli("run", built / "b.wbe", "--inputs", tmp_path / "big.npz"), "'x'", "[9, 4]", "[1, 4]..[8, 4]")


@pytest.mark.parametrize("args,words", [
    (["--min-shapes", "x:1x4"], ["--opt-shapes", "--max-shapes"]),
    (["--min-shapes", "x:1x4", "--opt-shapes", "x:1x4"], ["missing --max-shapes"]),
    (RANGE + ["--shapes", "x:2x4"], ["not both"]),
    (["--min-shapes", "x:1x4", "--opt-shapes", "x:2x4", "--max-shapes", "x:1xQ"], ["--max-shapes"]),
    (["--min-shapes", "x:4x4", "--opt-shapes", "x:2x4", "--max-shapes", "x:8x4"], ["min <= opt <= max"]),
    (["--min-shapes", "y:1x4", "--opt-shapes", "y:2x4", "--max-shapes", "y:8x4"], ["'y'", "not an input"]),
    (["--min-shapes", "x:1", "--opt-shapes", "x:2", "--max-shapes", "x:8"], ["rank 2"]),
    (["--buckets", "1,2"], ["--buckets needs shape ranges"]),
    (RANGE + ["--buckets", "1,2"], ["end below", "max batch 8"]),
    (RANGE + ["--buckets", "0,8"], ["positive integers"]),
])
def test_misuse_is_one_line(tmp_path, args, words, capsys):
    small_model(tmp_path / "m.onnx")
    one_line_error(cli(capsys, "build", tmp_path / "m.onnx", "-o", tmp_path / "e.wbe", "--device", "cpu", *args), *words)
    assert not (tmp_path / "e.wbe").exists()
