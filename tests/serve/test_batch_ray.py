"""``workbench.batch.infer`` and ``workbench batch`` on Ray Data (2 CPU actors): every sample's
outputs written exactly once, equal to the engine's own row by row; files checked before any work.

Ray's own transport between processes pickles (``allow_pickle``); workbench's files never do."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.serve import engines as E
from workbench.core.numerics import rel_err
from workbench.errors import InputError

BATCH = 8


@pytest.fixture(scope="module")
def engine_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("batch") / "dense.wbe"
    E.dense_fixed(path, batch=BATCH)
    return str(path)


@pytest.fixture(scope="module")
def ctx(engine_path):
    import workbench as wb

    return wb.Engine.load(engine_path).create_context(threads=1)


def write_feeds(folder, sizes, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    feeds = {}
    for i, n in enumerate(sizes):
        f = E.dense_feeds(rng, int(n))
        np.savez(os.path.join(folder, f"sample{i:04d}.npz"), **f)
        feeds[f"sample{i:04d}"] = f
    return feeds


@pytest.mark.slow
@pytest.mark.allow_pickle
def test_2000_samples_in_2_actors_each_written_once(ray_instance, engine_path, ctx, tmp_path):
    import workbench as wb

    rng = np.random.default_rng(1)
    sizes = rng.multinomial(2000 - 120, [1 / 120] * 120) + 1  # 120 files of 1 or more rows, 2,000 in all
    feeds = write_feeds(tmp_path / "in", sizes)
    out = tmp_path / "out"
    result = wb.batch.infer(str(tmp_path / "in"), engine_path, outputs=str(out), concurrency=2, progress=False)
    assert result == {"rows": 2000, "files": 120, "outputs": str(out), "format": "npz"}
    assert sorted(os.listdir(out)) == sorted(f"{stem}.npz" for stem in feeds)  # no extra, no temp files
    for stem, f in feeds.items():
        with np.load(out / f"{stem}.npz", allow_pickle=False) as got:
            want = E.row_by_row(ctx, f, BATCH)
            assert sorted(got.files) == ["y", "z"]
            for name in want:
                assert got[name].shape == want[name].shape and rel_err(got[name], want[name]) <= 1e-6, stem


@pytest.mark.slow
@pytest.mark.allow_pickle
def test_a_dataset_to_parquet_keeps_its_ids(ray_instance, engine_path, ctx, tmp_path):
    import pyarrow.parquet as pq
    import ray

    import workbench as wb

    rng = np.random.default_rng(2)
    n = 600
    feeds = E.dense_feeds(rng, n)
    ds = ray.data.from_items([{"id": i, "x": feeds["x"][i], "s": feeds["s"][i]} for i in range(n)],
                             override_num_blocks=6)
    out = tmp_path / "pq"
    result = wb.batch.infer(ds, engine_path, outputs=str(out), batch_size=16, concurrency=2, progress=False)
    assert result["rows"] == n and result["format"] == "parquet"
    ids, ys = [], []
    for name in sorted(os.listdir(out)):
        table = pq.read_table(out / name)
        ids.append(table.column("id").to_numpy())
        ys.append(table.column("y").combine_chunks().to_numpy_ndarray())
    ids, ys = np.concatenate(ids), np.concatenate(ys)
    assert sorted(ids.tolist()) == list(range(n))  # every sample exactly once
    want = E.row_by_row(ctx, feeds, BATCH)["y"]
    assert rel_err(ys, want[ids]) <= 1e-6


@pytest.mark.slow
@pytest.mark.allow_pickle
def test_cli_batch(ray_instance, engine_path, ctx, tmp_path, capsys):
    from workbench.cli import main

    feeds = write_feeds(tmp_path / "in", [3, 9, 1], seed=3)
    assert main(["batch", engine_path, "--inputs", str(tmp_path / "in"), "--outputs", str(tmp_path / "o"),
                 "--concurrency", "1", "-q"]) == 0
    assert "wrote the outputs of 13 rows to 3 npz files" in capsys.readouterr().out
    for stem, f in feeds.items():
        with np.load(tmp_path / "o" / f"{stem}.npz") as got:
            assert rel_err(got["y"], E.row_by_row(ctx, f, BATCH)["y"]) <= 1e-6


def test_feed_files_are_checked_before_any_work(engine_path, tmp_path, capsys):
    """Without Ray running: a wrong file is one line naming it (the CLI exits 2)."""
    from workbench.cli import main

    write_feeds(tmp_path / "in", [2, 2])
    np.savez(tmp_path / "in" / "zbad.npz", x=np.ones((2, 5), np.float32), s=np.ones((2, 1), np.float32))
    assert main(["batch", engine_path, "--inputs", str(tmp_path / "in"), "--outputs", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "zbad.npz" in err and "input 'x' has shape [2, 5]" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() or not os.listdir(tmp_path / "o")
    (tmp_path / "empty").mkdir()
    assert main(["batch", engine_path, "--inputs", str(tmp_path / "empty"), "--outputs", str(tmp_path / "o")]) == 2
    assert "holds no .npz files" in capsys.readouterr().err
    from workbench.batch import input_files, scan_files
    from workbench.runtime.engine import Engine
    from workbench.serve.batching import batch_layout

    engine = Engine.load(engine_path)
    files = input_files(str(tmp_path / "in"))[:2]
    assert scan_files(files, engine, batch_layout(engine)) == [2, 2]
    with pytest.raises(InputError, match="missing input 's'"):
        np.savez(tmp_path / "nos.npz", x=np.ones((2, E.WIDTH), np.float32))
        scan_files([str(tmp_path / "nos.npz")], engine, batch_layout(engine))


@pytest.mark.slow
@pytest.mark.allow_pickle
def test_an_engine_whose_rows_interact_is_refused(ray_instance, tmp_path):
    import workbench as wb
    from workbench.errors import WorkbenchError

    path = tmp_path / "mixing.wbe"
    E.build(E.mixing_model(), path)
    np.savez(tmp_path / "a.npz", x=np.random.default_rng(0).standard_normal((5, E.WIDTH)).astype(np.float32))
    with pytest.raises(WorkbenchError, match="rows are not independent") as info:
        wb.batch.infer([str(tmp_path / "a.npz")], str(path), outputs=str(tmp_path / "o"), concurrency=1,
                       progress=False)
    assert "\n" not in str(info.value)
    assert not os.listdir(tmp_path / "o")
