"""FusedConv / Conv through cudnn-frontend graphs: conv_fprop + bias + residual + activation.

One cuDNN operation graph per layer: ``Y = act(conv(X, W) + B + Z)``, the pointwise tail computed
in fp32 inside the conv kernel's epilogue (runtime-fusion engines). 1-D convs get a unit H dim;
groups and depthwise come from the weight's dims (cuDNN infers the group count from C / W.C).

Layout. Activations are NCHW device buffers unless the GPU target's layout assignment
(``builder/layout.py``) stored a tensor channels-last: then the layer's attrs ``in_layouts`` /
``out_layouts`` say so per tensor, and X, Z and Y are described to cuDNN with those strides
(each may differ: the stem conv reads NCHW and writes NHWC). Otherwise all three are NCHW
(config ``"layout": "nchw"``). The weight is ours (packed once at build), so its
layout is a tuning choice: ``"w": "nhwc"`` (KRSC, what cuDNN's tensor-core kernels read natively)
or ``"nchw"`` (KCRS; offered for NCHW layers only). The config's ``"layout"`` names the storage
the layer was given ("nhwc" if any of X, Z, Y is channels-last), so the tactic table shows it.

Configs: the plans of cuDNN's heuristics (modes A then B, deduplicated, ``MODE_PLANS`` per mode),
each named by cuDNN's plan name (engine + knobs), plus ``"split"``: the conv alone in cuDNN followed
by a CuPy elementwise epilogue, for graphs cuDNN cannot fuse (e.g. some depthwise or fp32 cases).
At engine load ``build`` re-creates the graph and picks the recorded plan by name: no timing.

Precision: fp16/bf16 I/O with fp32 compute; fp32 has tensor-core (TF32) engines deselected;
tf32 allows them.
"""

from __future__ import annotations

from ...core.plan import Layer
from .common import (CONV_OPS, IO_DTYPE, activation_of, as_device, check_io, conv_geometry, has_input, make_epilogue,
                     ptr, require_activation, require_cupy, require_op, stream_ptr)
from .cudnn_common import Launcher, buildable_plans, cudnn_dtype, handle, plan_index, require_cudnn
from .tactic import BuiltKernel, GpuInfo, TacticBase

# plans per heuristic mode for the fused conv in its assigned layouts (deduplicated across modes by
# cuDNN's plan name): mode A's top plans, then B's (a different heuristic ranking), then the fallback
# list. Building a runtime-fusion plan compiles a kernel, so these caps bound the cold build time.
MODE_PLANS = (("A", 5), ("B", 3))  # FALLBACK too cost 88 s cold at b32 (H100, 2026-11-26)
_GRAPHS: dict = {}  # (signature, mode) -> (graph, tensors, plan names) or a reason


def strides(dims, layout: str) -> list[int]:
    """Element strides of a packed tensor with logical dims [N, C, *spatial] in ``layout``."""
    if layout == "nchw":
        out, acc = [], 1
        for d in reversed(dims):
            out.append(acc)
            acc *= d
        return out[::-1]
    c, sp = dims[1], dims[2:]
    st = [0] * len(dims)
    st[1], acc = 1, c
    for i in range(len(sp) - 1, -1, -1):
        st[2 + i] = acc
        acc *= sp[i]
    st[0] = acc
    return st


def _geometry(layer: Layer):
    g = conv_geometry(layer)
    if isinstance(g, str):
        return g
    if len(g["k"]) not in (1, 2, 3):
        return f"{len(g['k'])}-D convolution"
    if len(g["k"]) == 1:  # 1-D: a unit H dim in front, cuDNN wants 4-D or 5-D tensors
        for key, v in (("sp", 1), ("k", 1), ("strides", 1), ("dilations", 1), ("begin", 0), ("end", 0), ("out", 1)):
            g[key] = [v] + g[key]
    return g


def _signature(layer: Layer, precision: str, g: dict, config: dict):
    act, p = activation_of(layer)
    fused = not config.get("split")
    return (precision, g["n"], g["c"], g["m"], tuple(g["sp"]), tuple(g["k"]), tuple(g["strides"]),
            tuple(g["dilations"]), tuple(g["begin"]), tuple(g["end"]), has_input(layer, 2) and fused,
            has_input(layer, 3) and fused, act if fused else "", tuple(sorted(p.items())) if fused else (),
            _layouts(layer, config), config.get("w", "nhwc"))


def _layouts(layer: Layer, config: dict) -> tuple[str, str, str]:
    """Storage layouts of X, Z (residual) and Y: the layout assignment's per-tensor choice
    (attrs ``in_layouts`` / ``out_layouts``, see builder/layout.py) when the layer has one, else
    the config's ``layout`` for all three."""
    ins, outs = layer.attrs.get("in_layouts"), layer.attrs.get("out_layouts")
    if ins or outs:
        ins, outs = list(ins or []), list(outs or [])
        get = lambda lst, i: (lst[i] if i < len(lst) and lst[i] else "nchw")  # noqa: E731
        return get(ins, 0), get(ins, 3), get(outs, 0)
    lay = config.get("layout", "nchw")
    return lay, lay, lay


def _activation(gr, t, act: str, p: dict):
    """cuDNN pointwise ops for ``act`` (None: no cuDNN equivalent)."""
    import cudnn  # noqa: PLC0415

    if act == "":
        return t
    if act == "Relu":
        return gr.relu(input=t)
    if act == "Clip":
        lo, hi = p.get("act_min"), p.get("act_max")
        return gr.relu(input=t, lower_clip=float(lo) if lo is not None else -3.4e38,
                       upper_clip=float(hi) if hi is not None else 3.4e38)
    if act == "LeakyRelu":
        return gr.leaky_relu(input=t, negative_slope=float(p.get("act_alpha", 0.01)))
    if act in ("Sigmoid", "Tanh", "Gelu", "GeluTanh"):
        op = {"Sigmoid": "sigmoid", "Tanh": "tanh", "Gelu": "gelu", "GeluTanh": "gelu_approx_tanh"}[act]
        return getattr(gr, op)(input=t)
    if act == "Silu":
        return gr.swish(input=t)
    if act in ("HardSigmoid", "HardSwish"):
        alpha, beta = ((float(p.get("act_alpha", 0.2)), float(p.get("act_beta", 0.5))) if act == "HardSigmoid"
                       else (1.0 / 6.0, 0.5))
        const = cudnn.scalar_type.COMPILE_TIME_CONST  # baked into the generated kernel
        s = gr.mul(a=t, b=gr.tensor_scalar(alpha, const))
        s = gr.add(a=s, b=gr.tensor_scalar(beta, const))
        s = gr.relu(input=s, lower_clip=0.0, upper_clip=1.0)
        return s if act == "HardSigmoid" else gr.mul(a=t, b=s)
    return None


def _graph(layer: Layer, precision: str, g: dict, config: dict, mode: str):
    """(graph, tensors, plan names) for this layer and heuristic mode, or a reason. Cached: the
    graph is built once per (signature, mode) and shared by supports, configs and build."""
    key = (_signature(layer, precision, g, config), mode)
    if key in _GRAPHS:
        return _GRAPHS[key]
    import cudnn  # noqa: PLC0415

    io = cudnn_dtype(IO_DTYPE[precision])
    act, p = activation_of(layer)
    split = bool(config.get("split"))
    (xl, zl, yl), wl = _layouts(layer, config), config.get("w", "nhwc")
    xd = [g["n"], g["c"], *g["sp"]]
    wd = [g["m"], g["c"] // g["group"], *g["k"]]
    yd = [g["n"], g["m"], *g["out"]]
    try:
        gr = cudnn.pygraph(io_data_type=io, intermediate_data_type=cudnn.data_type.FLOAT,
                           compute_data_type=cudnn.data_type.FLOAT, handle=handle())
        t = {"X": gr.tensor(name="X", dim=xd, stride=strides(xd, xl), data_type=io),
             "W": gr.tensor(name="W", dim=wd, stride=strides(wd, wl), data_type=io)}
        y = gr.conv_fprop(image=t["X"], weight=t["W"], pre_padding=g["begin"], post_padding=g["end"],
                          stride=g["strides"], dilation=g["dilations"])
        if has_input(layer, 2) and not split:
            t["B"] = gr.tensor(name="B", dim=[1, g["m"]] + [1] * len(g["sp"]),
                               stride=[g["m"], 1] + [1] * len(g["sp"]), data_type=io)
            y = gr.add(a=y, b=t["B"])
        if has_input(layer, 3) and not split:
            t["Z"] = gr.tensor(name="Z", dim=yd, stride=strides(yd, zl), data_type=io)
            y = gr.add(a=y, b=t["Z"])
        y = _activation(gr, y, act if not split else "", p)
        if y is None:
            res = f"no cuDNN pointwise op for activation {act!r}"
            _GRAPHS[key] = res
            return res
        y.set_output(True).set_dim(yd).set_stride(strides(yd, yl)).set_data_type(io)
        t["Y"] = y
        gr.validate()
        gr.build_operation_graph()
        gr.create_execution_plans([getattr(cudnn.heur_mode, mode)])
        if precision == "fp32":  # TF32 tensor cores are not fp32 arithmetic
            gr.deselect_numeric_notes([cudnn.numerical_note.TENSOR_CORE])
        gr.check_support()
        res = _Graph(gr, t, mode)
    except Exception as e:  # cuDNN says why (unsupported graph, no engine, ...)
        res = f"cuDNN ({mode}): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    _GRAPHS[key] = res
    return res


class _Graph:
    """A validated cuDNN graph whose execution plans are built lazily: ``plans()`` builds the first
    few (autotuning), ``index_of`` builds only the recorded one (engine load, warm timing cache)."""

    def __init__(self, gr, t, mode):
        self.gr, self.t, self.mode = gr, t, mode
        self._plans = None
        self._built: dict[int, str] = {}

    def plans(self, limit: int = 6, skip=frozenset()) -> list[tuple[int, str]]:
        if self._plans is None:
            self._plans = buildable_plans(self.gr, limit, skip)
            self._built.update(dict(self._plans))
        return self._plans

    def index_of(self, config: dict, layer: Layer) -> int:
        name = config.get("plan")
        for i, n in self._built.items():
            if n == name:
                return i
        if name is not None:
            try:  # plan names come from the engine configs: no need to build the others
                for i in range(self.gr.get_execution_plan_count()):
                    if self.gr.get_plan_name_at_index(i) == name:
                        self.gr.build_plan_at_index(i)
                        self._built[i] = name
                        return i
            except Exception:  # noqa: BLE001 - names need built plans here: build the usual ones
                pass
        return plan_index(self.plans(), config, layer)


class CudnnConv(TacticBase):
    name = "cudnn.conv"
    supports_cost = 1  # validates a cuDNN graph

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        why = (require_op(layer, CONV_OPS, "a convolution") or require_cupy() or require_cudnn()
               or require_activation(layer))
        if why:
            return why
        g = _geometry(layer)
        if isinstance(g, str):
            return g
        why = check_io(layer, precision, inputs=[0, 3])
        if why:
            return why
        # cheap: one graph validated, no plan built (configs() builds and autotuning times them)
        for cfg in ({"w": "nhwc"}, {"w": "nhwc", "split": 1}):
            res = _graph(layer, precision, g, dict(cfg, mode="A"), "A")
            if not isinstance(res, str):
                return None
        return res

    def configs(self, layer: Layer, precision: str, gpu: GpuInfo) -> list[dict]:
        """Every candidate keeps the layer's assigned layouts for X, Z and Y (builder/layout.py), so
        no plan needs a conversion layer; the weight, packed once at build, is KRSC for channels-last
        layers and KRSC or KCRS otherwise."""
        g = _geometry(layer)
        lays = _layouts(layer, {})
        layout = "nhwc" if "nhwc" in lays else "nchw"  # the report's name; the graph uses ``lays``
        out, seen = [], set()
        for wl in (("nhwc",) if layout == "nhwc" else ("nhwc", "nchw")):
            for split in ((False, True) if wl == "nhwc" else (False,)):
                wide = not split and wl == "nhwc"
                names: set[str] = set()
                for mode, cap in (MODE_PLANS if wide else (("A", 1), ("B", 1))):
                    if not wide and names:
                        break  # split / KCRS variants: one plan, from the first mode that has one
                    cfg = {"layout": layout, "w": wl, "mode": mode}
                    if split:
                        cfg["split"] = 1
                    res = _graph(layer, precision, g, cfg, mode)
                    if isinstance(res, str):
                        continue
                    for i, name in res.plans(limit=cap, skip=frozenset(names)):
                        if (wl, split, name) in seen:
                            continue
                        seen.add((wl, split, name))
                        names.add(name)
                        out.append(dict(cfg, plan=name, index=i))
        return out

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        import cudnn  # noqa: PLC0415

        g = _geometry(layer)
        res = _graph(layer, precision, g, config, config.get("mode", "A"))
        if isinstance(res, str):
            raise RuntimeError(res)
        gr, t = res.gr, res.t
        index = res.index_of(config, layer)
        ws = int(gr.get_workspace_size_plan_at_index(index))
        io = IO_DTYPE[precision]
        # weight packed once, in the layout the graph declares
        w = as_device(weights[layer.inputs[1]], io).reshape([g["m"], g["c"] // g["group"], *g["k"]])
        if config.get("w", "nhwc") == "nhwc":
            w = w.transpose(0, *range(2, w.ndim), 1).copy()
        bias = as_device(weights[layer.inputs[2]], io) if has_input(layer, 2) else None
        split = bool(config.get("split"))
        epi = None
        if split:
            act, p = activation_of(layer)
            epi = make_epilogue(act, p, int(bias is not None) + int(has_input(layer, 3)))
            if bias is not None:
                bias = bias.reshape((1, g["m"]) + (1,) * (len(layer.output_specs[0].shape) - 2))
        xl, zl, yl = _layouts(layer, config)
        if split and yl == "nhwc":
            if has_input(layer, 3) and zl != yl:
                raise RuntimeError("split epilogue needs the residual in the output's layout")
            if bias is not None:
                bias = bias.reshape(1, g["m"])
        h = handle()
        launch = Launcher(gr, index, t)
        w_ptr, b_ptr = ptr(w), ptr(bias)
        fused_b = "B" in t

        def run(inputs, outputs, workspace, stream):
            cudnn.set_stream(h, stream_ptr(stream))
            ptrs = [ptr(inputs[0]), w_ptr]
            if fused_b:
                ptrs.append(b_ptr)
            if "Z" in t:
                ptrs.append(ptr(inputs[3]))
            ptrs.append(ptr(outputs[0]))
            launch(ptrs, ptr(workspace), h)
            y = outputs[0]
            if epi is not None:
                z = inputs[3] if has_input(layer, 3) else None
                if yl == "nhwc":  # channels-last storage: the epilogue sees [pixels, channels]
                    y = y.reshape(-1, g["m"])
                    z = z.reshape(-1, g["m"]) if z is not None else None
                epi(y, ([bias] if bias is not None else []) + ([z] if z is not None else []), stream)

        return BuiltKernel(run=run, workspace_bytes=ws, info={"fast_launch": launch.raw is not None},
                           keepalive=(gr, w, bias, launch))


TACTICS = [CudnnConv()]
