"""Batch inference on Ray Data: an engine over a folder of feed files or a Ray Dataset, one engine
per actor (on a GPU each, or CPUs), every output written exactly once.

    import workbench as wb
    wb.batch.infer("feeds/", "resnet.wbe", outputs="out/")          # out/<stem>.npz per feeds/<stem>.npz
    wb.batch.infer(ds, "resnet.wbe", outputs="out/", format="parquet")
    out_ds = wb.batch.infer(ds, "resnet.wbe")                       # a lazy Dataset: write it yourself

Feed files are ``.npz`` like ``workbench run --inputs``: keys are input names, dim 0 counts rows
(any number per file when the engine is batched; exactly the engine's shapes otherwise). A Dataset
has one row per sample, a column per input (other columns are passed through to the outputs).

The feed files are checked from their headers before any work starts (one-line errors naming the
file and input). The actors read the files themselves (no copy of the inputs through the object
store) and run their rows through ``workbench.serve.batching`` in engine-sized runs. This process
writes the outputs as they stream back (atomically, one file per feed file for npz, one part per
batch for Parquet), checks that every row arrives exactly once and shows a progress bar; Ctrl-C
leaves only complete files. On a multi-node cluster the paths must be readable on every node.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import re

import numpy as np

from .core.budget import default_memory_budget
from .core.files import (
    atomic_write,
    npz_bytes,
    npz_members,
    open_regular,
    read_npz,
    regular_file,
)
from .errors import InputError, WorkbenchError
from .runtime.engine import Engine
from .serve.batching import (
    BatchLayout,
    batch_layout,
    check_request,
    rows_interact,
    run_rows,
)
from .serve.ray_support import connect, require_ray_data

FORMATS = ("npz", "parquet")
SOURCE, ROW = "source", "row"  # the columns that say which file and row an output belongs to


def infer(data, engine_path, *, outputs: str | os.PathLike | None = None, format: str | None = None,
          batch_size: int | None = None, concurrency: int | None = None, num_cpus: float | None = None,
          num_gpus: float | None = None, threads: int | None = None, address: str | None = None,
          progress: bool = True):
    """Run ``engine_path`` over ``data`` (a folder of ``.npz`` feed files, a list of them, or a
    ``ray.data.Dataset``). With ``outputs`` (a folder, made if missing) writes the outputs and
    returns a summary {"rows", "files", "outputs", "format"}; without, returns the lazy output
    Dataset. ``format``: "npz" (default for files) or "parquet" (default for a Dataset).

    ``batch_size``: rows per engine batch (default: the engine's largest batch). ``concurrency``:
    engine actors (default: one per GPU for a GPU engine, half the CPUs for a CPU engine), each
    with ``num_gpus`` (default 1 for GPU engines) and ``num_cpus`` (default 1). ``address``: the Ray
    cluster (default: this process's Ray, or a new local instance)."""
    rd = require_ray_data("workbench.batch.infer")
    path = os.path.abspath(regular_file(os.fspath(engine_path), "engine"))
    engine = Engine.load(path)
    layout = batch_layout(engine)
    limit = layout.batch_limit(batch_size)
    fmt = _format(format, data, rd)
    files = rows_per_file = None
    if not isinstance(data, rd.Dataset):
        files = input_files(data)
        rows_per_file = scan_files(files, engine, layout)
        if fmt == "npz":
            _unique_stems(files)
    dest = _output_folder(outputs) if outputs is not None else None
    started = connect(address)
    try:
        actors, options = _actor_options(engine, concurrency, num_cpus, num_gpus)
        if files is not None:
            mean_rows = max(1, sum(rows_per_file) // len(files))
            ds = rd.from_items([{"path": f} for f in files], override_num_blocks=min(len(files), 4 * actors))
            call_size = max(1, limit // mean_rows)  # files per call: about one engine batch of rows
        else:
            ds, call_size = data, limit
        out = ds.map_batches(EngineRunner, fn_constructor_kwargs={"engine_path": path, "max_batch": limit,
                                                                  "threads": threads, "gpu": engine.backend == "gpu"},
                             batch_size=call_size, batch_format="numpy",
                             compute=rd.ActorPoolStrategy(size=actors), **options)
        if dest is None:
            return out
        total = sum(rows_per_file) if rows_per_file is not None else None
        writer = (NpzWriter(dest, files, rows_per_file, layout) if fmt == "npz" and files is not None
                  else PartWriter(dest, fmt, files, rows_per_file))
        _drain(out, writer, total, progress)
        return {"rows": writer.rows, "files": writer.written, "outputs": dest, "format": fmt}
    finally:
        if started and dest is not None:  # a returned Dataset still needs the Ray it runs on
            import ray  # noqa: PLC0415

            ray.shutdown()


# ---- inputs ----------------------------------------------------------------------------------

def input_files(data) -> list[str]:
    """The ``.npz`` feed files of a folder (sorted) or the given list; one-line errors otherwise."""
    if isinstance(data, (str, os.PathLike)):
        folder = os.fspath(data)
        if not os.path.isdir(folder):
            if os.path.exists(folder):
                return [os.path.abspath(regular_file(folder, "inputs file"))]
            raise InputError(f"inputs {folder!r} does not exist")
        files = sorted(glob.glob(os.path.join(glob.escape(folder), "*.npz")))
        if not files:
            raise InputError(f"inputs folder {folder!r} holds no .npz files")
    elif isinstance(data, (list, tuple)):
        files = [os.fspath(f) for f in data]
        if not files:
            raise InputError("no input files given")
    else:
        raise InputError(f"inputs must be a folder, a list of .npz files or a ray.data.Dataset, got {type(data).__name__}")
    return [os.path.abspath(regular_file(f, "inputs file")) for f in files]


def scan_files(files: list[str], engine, layout: BatchLayout) -> list[int]:
    """Rows of each feed file, from its headers only; InputError naming the file and input whose
    names, dtypes or shapes do not fit the engine."""
    import zipfile

    rows = []
    for f in files:
        what = f"inputs file {f!r}"
        with open_regular(f, what) as raw:
            try:
                with zipfile.ZipFile(raw) as zf:
                    members = {n: e[0] for n, e in npz_members(zf, what).items()}
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise InputError(f"{what} is not a valid .npz file ({exc})") from None
        feeds = {n: np.lib.stride_tricks.as_strided(np.zeros(1, m.dtype), m.shape, [0] * len(m.shape))
                 for n, m in members.items()}  # header-only stand-ins: shape and dtype, no data
        try:  # names, dtypes, ranks and dims, as a request is checked
            _, n = check_request(layout, engine.inputs, feeds)
        except InputError as exc:
            raise InputError(f"{what}: {exc}") from None
        rows.append(n)
    return rows


def _unique_stems(files: list[str]) -> None:
    seen: dict[str, str] = {}
    for f in files:
        stem = _stem(f)
        if stem in seen:
            raise InputError(f"inputs {seen[stem]!r} and {f!r} would both write {stem}.npz; give files with distinct names")
        seen[stem] = f


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _format(format: str | None, data, rd) -> str:
    if format is None:
        return "parquet" if isinstance(data, rd.Dataset) else "npz"
    if format not in FORMATS:
        raise WorkbenchError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    return format


def _output_folder(outputs) -> str:
    dest = os.path.abspath(os.fspath(outputs))
    parent = os.path.dirname(dest)
    if not os.path.isdir(parent):
        raise WorkbenchError(f"cannot write outputs to {os.fspath(outputs)!r}: folder {parent!r} does not exist")
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise WorkbenchError(f"outputs {os.fspath(outputs)!r} is a file; give a folder")
    os.makedirs(dest, exist_ok=True)
    return dest


def _actor_options(engine, concurrency, num_cpus, num_gpus) -> tuple[int, dict]:
    import ray  # noqa: PLC0415 - connected by now

    have = ray.cluster_resources()
    options: dict = {"num_cpus": 1 if num_cpus is None else num_cpus}
    if engine.backend == "gpu":
        options["num_gpus"] = 1 if num_gpus is None else num_gpus
        if have.get("GPU", 0) < options["num_gpus"]:
            raise WorkbenchError("the engine runs on the GPU and the Ray cluster has no GPU; rebuild it with --device cpu")
        default = max(1, int(have.get("GPU", 0) // options["num_gpus"]))
    else:
        default = max(1, int(have.get("CPU", 1) // (2 * options["num_cpus"])))
    actors = default if concurrency is None else concurrency
    if isinstance(actors, bool) or not isinstance(actors, int) or actors < 1:
        raise WorkbenchError(f"concurrency must be a positive whole number, got {concurrency!r}")
    return actors, options


# ---- the actor -------------------------------------------------------------------------------

class EngineRunner:
    """One engine per Ray Data actor. A batch is either feed-file paths (column ``path``: the actor
    reads them and returns one row per sample with ``source`` and ``row``) or sample rows (input
    columns; other columns pass through)."""

    def __init__(self, engine_path: str, max_batch: int, threads: int | None = None, gpu: bool = False):
        self.engine = Engine.load(engine_path)
        options = {} if gpu else {"threads": threads or _cpus_of_actor()}
        self.ctx = self.engine.create_context(**options)
        layout = batch_layout(self.engine)
        why = rows_interact(self.ctx, layout)
        if why:
            raise WorkbenchError(f"the engine's rows are not independent ({why}): batching its samples would change "
                                 "their outputs; run such a model with workbench run, one feed file at a time")
        if layout.batched and layout.max_rows is None:
            layout = BatchLayout(True, layout.min_rows, max_batch, None, layout.row_specs)
        self.layout = layout
        self.inputs = [s.name for s in self.engine.inputs]

    def __call__(self, batch: dict) -> dict:
        if "path" in batch and not any(n in batch for n in self.inputs):
            return self._files(batch["path"])
        return self._rows(batch)

    def _files(self, paths) -> dict:
        pieces, sources, rows = [], [], []
        for path in paths:
            path = str(path)
            feeds = read_npz(path, max_bytes=default_memory_budget(), what=f"inputs file {path!r}")
            feeds, n = check_request(self.layout, self.engine.inputs, feeds)
            pieces.append((feeds, n))
            sources.append(np.full(n, _stem(path), dtype=object))
            rows.append(np.arange(n, dtype=np.int64))
        outs = run_rows(self.ctx, self.layout, pieces)
        if not self.layout.batched:  # one "row" per file: the file's whole outputs
            outs = [{k: v[None] for k, v in o.items()} for o in outs]
        joined = _stack_outputs(outs)
        return {SOURCE: np.concatenate(sources), ROW: np.concatenate(rows), **joined}

    def _rows(self, batch: dict) -> dict:
        missing = [n for n in self.inputs if n not in batch]
        if missing:
            raise InputError(f"the dataset has no column {missing[0]!r}; the engine's inputs are {', '.join(self.inputs)}")
        feeds = {n: _dense(batch[n]) for n in self.inputs}
        if self.layout.batched:
            checked = check_request(self.layout, self.engine.inputs, feeds)
            outs = run_rows(self.ctx, self.layout, [checked])[0]
        else:  # each row is a whole request
            count = len(next(iter(feeds.values())))
            per = run_rows(self.ctx, self.layout,
                           [check_request(self.layout, self.engine.inputs, {k: v[i] for k, v in feeds.items()})
                            for i in range(count)])
            outs = _stack_outputs([{k: v[None] for k, v in o.items()} for o in per])
        rest = {k: v for k, v in batch.items() if k not in self.inputs}
        clash = [k for k in outs if k in rest]
        if clash:
            raise InputError(f"the dataset's column {clash[0]!r} has the name of an engine output; rename it")
        return {**rest, **outs}


def _cpus_of_actor() -> int:
    try:
        import ray  # noqa: PLC0415

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        return max(1, math.floor(cpus))
    except Exception:  # noqa: BLE001
        return 1


def _dense(column) -> np.ndarray:
    """A tensor column as one array (Ray gives ragged or object columns as arrays of arrays)."""
    arr = np.asarray(column)
    if arr.dtype == object:
        arr = np.stack([np.asarray(v) for v in arr])
    return arr


def _stack_outputs(outs: list[dict]) -> dict[str, np.ndarray]:
    if not outs:
        return {}
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


# ---- writing ---------------------------------------------------------------------------------

def _drain(out, writer, total: int | None, progress: bool) -> None:
    import ray  # noqa: PLC0415
    from ray.data.context import DataContext  # noqa: PLC0415
    from tqdm.auto import tqdm  # noqa: PLC0415

    ctx = DataContext.get_current()
    saved = ctx.enable_progress_bars, ctx.print_on_execution_start
    ctx.enable_progress_bars = ctx.print_on_execution_start = False  # ours counts rows written
    data_log = logging.getLogger("ray.data")
    level = data_log.level
    data_log.setLevel(max(level, logging.WARNING))
    try:
        with tqdm(total=total, unit="row", desc="batch inference", disable=not progress) as bar:
            for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
                bar.update(writer.add(batch))
    except (ray.exceptions.RayError, _user_code_error()) as exc:  # a task or actor failed: say why in one line
        raise WorkbenchError(f"batch inference failed: {_task_cause(exc)}") from None
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start = saved
        data_log.setLevel(level)
    writer.finish()


def _user_code_error() -> type:
    try:
        from ray.data.exceptions import UserCodeException  # noqa: PLC0415

        return UserCodeException
    except ImportError:
        return RuntimeError


def _task_cause(exc: BaseException) -> str:
    """The last ``SomeError: message`` line of the failed task's or actor's traceback."""
    seen, texts = set(), []
    while exc is not None and id(exc) not in seen:  # Ray Data wraps the task error in its own
        seen.add(id(exc))
        texts.append(str(exc))
        exc = getattr(exc, "cause", None) or exc.__cause__
    lines = [ln.strip() for t in texts for ln in t.splitlines() if ln.strip()]
    found = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception)\b.*?:", ln)]
    return (found[-1] if found else lines[-1] if lines else "unknown error")[:300]


class NpzWriter:
    """One ``<stem>.npz`` per feed file, written once all its rows are back."""

    def __init__(self, dest: str, files: list[str], rows_per_file: list[int], layout: BatchLayout):
        self.dest = dest
        self.expected = {_stem(f): n for f, n in zip(files, rows_per_file)}
        self.batched = layout.batched
        self.pending: dict[str, dict] = {}
        self.done: set[str] = set()
        self.rows = 0
        self.written = 0

    def add(self, batch: dict) -> int:
        sources, rows = batch[SOURCE], batch[ROW]
        columns = {k: _dense(v) for k, v in batch.items() if k not in (SOURCE, ROW)}
        for i in range(len(rows)):
            stem, row = str(sources[i]), int(rows[i])
            if stem in self.done or stem not in self.expected:
                raise WorkbenchError(f"output rows of {stem!r} arrived after its file was written (duplicate work)")
            slot = self.pending.setdefault(stem, {"got": np.zeros(self.expected[stem], bool), "rows": {}})
            if slot["got"][row]:
                raise WorkbenchError(f"row {row} of {stem!r} arrived twice")
            slot["got"][row] = True
            slot["rows"][row] = {k: v[i] for k, v in columns.items()}
            if slot["got"].all():
                self._write(stem, slot["rows"])
        self.rows += len(rows)
        return len(rows)

    def _write(self, stem: str, rows: dict[int, dict]) -> None:
        ordered = [rows[r] for r in range(len(rows))]
        if self.batched:
            arrays = {k: np.stack([r[k] for r in ordered]) for k in ordered[0]}
        else:
            arrays = dict(ordered[0])
        atomic_write(os.path.join(self.dest, f"{stem}.npz"), npz_bytes(arrays))
        del self.pending[stem]
        self.done.add(stem)
        self.written += 1

    def finish(self) -> None:
        missing = [s for s in self.expected if s not in self.done]
        if missing:
            raise WorkbenchError(f"{len(missing)} input files got no complete outputs (first: {missing[0]!r})")


class PartWriter:
    """Outputs as numbered files, one per batch that streams back (Parquet; or npz parts for a
    Dataset), with every row checked in once when the rows are numbered."""

    def __init__(self, dest: str, fmt: str, files: list[str] | None, rows_per_file: list[int] | None):
        self.dest, self.fmt = dest, fmt
        self.expected = ({_stem(f): n for f, n in zip(files, rows_per_file)} if files is not None else None)
        self.seen = {s: np.zeros(n, bool) for s, n in self.expected.items()} if self.expected else None
        self.rows = 0
        self.written = 0

    def add(self, batch: dict) -> int:
        n = len(next(iter(batch.values()))) if batch else 0
        if n == 0:
            return 0
        if self.seen is not None:
            for stem, row in zip(batch[SOURCE], batch[ROW]):
                got = self.seen[str(stem)]
                if got[int(row)]:
                    raise WorkbenchError(f"row {int(row)} of {str(stem)!r} arrived twice")
                got[int(row)] = True
        path = os.path.join(self.dest, f"part-{self.written:05d}.{self.fmt}")
        if self.fmt == "parquet":
            atomic_write(path, _parquet_writer(batch))
        else:
            atomic_write(path, npz_bytes({k: _dense(v) for k, v in batch.items()}))
        self.written += 1
        self.rows += n
        return n

    def finish(self) -> None:
        if self.seen is not None:
            missing = [(s, int(np.argmin(g))) for s, g in self.seen.items() if not g.all()]
            if missing:
                raise WorkbenchError(f"{len(missing)} input files have rows without outputs "
                                     f"(first: row {missing[0][1]} of {missing[0][0]!r})")


def _parquet_writer(batch: dict):
    import pyarrow as pa  # noqa: PLC0415 - a Ray Data dependency
    import pyarrow.parquet as pq  # noqa: PLC0415

    columns = {}
    for name, value in batch.items():
        arr = np.asarray(value)
        if arr.dtype == object and arr.size and isinstance(arr.flat[0], str):
            columns[name] = pa.array(arr.tolist(), type=pa.string())
            continue
        arr = _dense(arr)
        if arr.dtype.kind not in "biuf":
            arr = arr.astype(np.float32)  # bfloat16 and other types Arrow lacks
        columns[name] = (pa.array(arr) if arr.ndim == 1
                         else pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(arr)))
    table = pa.table(columns)

    def write(f) -> None:
        pq.write_table(table, f)

    return write
