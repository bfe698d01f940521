"""What the cuDNN tactics (``cudnn.conv``, ``cudnn.sdpa``) share: the cudnn-frontend import check,
one handle per process, element types, plan building and choice by name, and the launcher that
executes a built plan with the least host work. cudnn is imported inside functions."""

from __future__ import annotations

import numpy as np

from ...core.plan import Layer

_HANDLE = []


def require_cudnn() -> str | None:
    """None if cudnn-frontend imports, else why not."""
    try:
        import cudnn  # noqa: F401, PLC0415

        return None
    except Exception as e:
        return f"cudnn-frontend is not available ({type(e).__name__}: {e})"


def handle():
    import cudnn  # noqa: PLC0415

    if not _HANDLE:
        _HANDLE.append(cudnn.create_handle())
    return _HANDLE[0]


def cudnn_dtype(name: str):
    import cudnn  # noqa: PLC0415

    return {"float16": cudnn.data_type.HALF, "bfloat16": cudnn.data_type.BFLOAT16,
            "float32": cudnn.data_type.FLOAT, "float8e4m3fn": cudnn.data_type.FP8_E4M3}[name]


def plan_index(plans: list, config: dict, layer: Layer) -> int:
    """The graph's index of the recorded plan (by cuDNN's plan name: engine + knobs)."""
    name = config.get("plan")
    for i, n in plans:
        if n == name or (name is None and i == int(config.get("index", 0))):
            return i
    raise RuntimeError(f"cuDNN no longer offers plan {name!r} for layer {layer.name}: rebuild the engine")


def buildable_plans(gr, limit: int = 6, skip=frozenset()) -> list[tuple[int, str]]:
    """(index, name) of the first ``limit`` plans that build, leaving out plans named in ``skip``
    (already offered by another heuristic mode) before building them where the name is known
    unbuilt. Building is also the only reliable filter: plans removed by ``deselect_*`` stay in
    the list and fail only at build."""
    out = []
    tries = 0
    for i in range(gr.get_execution_plan_count()):
        if len(out) >= limit or tries >= limit + 6:  # deselected plans fail only at build
            break
        try:
            if gr.get_plan_name_at_index(i) in skip:
                continue
        except Exception:  # noqa: BLE001 - the name may need a built plan
            pass
        tries += 1
        try:
            gr.build_plan_at_index(i)
            out.append((i, gr.get_plan_name_at_index(i)))
        except Exception:
            continue
    return out


class Launcher:
    """Executes one built plan of a cuDNN graph with the least host work the frontend allows.

    The public ``execute_plan_at_index`` with a dict costs ~60 us of Python per call (measured on
    an H200), which would dominate every small layer during autotuning and un-graphed runs. The
    frontend's own fast path hands C++ a sorted array of pointers (``_execute_with_raw_ptrs``); we
    fill such an array in place. Those are private names of cudnn-frontend 1.32: if they are
    missing or refuse our arguments, the first call falls back to the public dict form for good.
    """

    def __init__(self, gr, index: int, tensors: dict):
        from cudnn._handle import to_backend_handle  # noqa: PLC0415

        self.gr, self.index, self.tensors = gr, index, tensors
        self.names = list(tensors)
        self.raw = None
        try:
            uid_of = {tensors[n].uid: n for n in self.names}
            order = list(gr._variant_pack_uids())
            cfg = gr._materialize_backend_plan(index)
            if sorted(order) == sorted(uid_of) and cfg.cpp_index is not None:
                self.order = [self.names.index(uid_of[u]) for u in order]
                self.arr = np.zeros(len(order), np.int64)
                self.cpp_index = cfg.cpp_index
                self.raw = gr._lowered_graph._execute_with_raw_ptrs
                self.to_h = to_backend_handle
        except Exception:
            self.raw = None

    def __call__(self, ptrs: list[int], ws_ptr: int, h) -> None:
        if self.raw is not None:
            for j, i in enumerate(self.order):
                self.arr[j] = ptrs[i]
            try:
                self.raw(self.arr.ctypes.data, len(self.arr), ws_ptr, self.to_h(h), self.cpp_index)
                return
            except TypeError:
                self.raw = None  # signature changed: public path from now on
        self.gr.execute_plan_at_index({self.tensors[n]: p for n, p in zip(self.names, ptrs)}, ws_ptr,
                                      index=self.index, handle=h)
