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

``cudnn.conv_fp8``: fp8 e4m3 layers (``core/quant.py``) as one cuDNN graph, channels-last,
computing what the CPU emulation computes: ``Y = act(conv(Xq, Wq) * alpha_c + B + Z)``, with Xq
and Wq e4m3 codes, products summed in float32, ``alpha_c = scale_in * scale_w_c`` (one float32 per
output channel, ``quant.output_scale``) and the tail in float32. X is float16 (quantized first by
the NVRTC quantize launch of ``cublaslt_quant``, into the layer's workspace) or already codes of
the layer's input scale; Z (the residual) is float16, or codes of ``q_residual_scale`` that the
graph dequantizes (a float16 residual with ``q_residual_scale`` is quantized first, like X); Y is
float16, or codes of ``q_output_scale``: the graph multiplies by ``1 / q_output_scale`` (one
float32 rounding more than the emulation's division) and clamps to +-448 before cuDNN's
conversion to e4m3 rounds to nearest even. With ``q_copy_scale`` the graph writes both: Y in
float and, as the layer's last output, its codes the same way (a block output that the next
block's convolution reads as codes and its residual add as floats). cuDNN's FP8 MMA sums with fewer bits than float32
within an instruction, so fp8 layers match the emulation to float32 round-off, not bit for bit.
"""

from __future__ import annotations

import numpy as np

from ...core import quant
from ...core.plan import Layer
from ..reference.quantized import check_layer
from .common import (CONV_OPS, IO_DTYPE, activation_of, as_device, check_io, conv_geometry, has_input, make_epilogue,
                     ptr, require_activation, require_cupy, require_op, stream_ptr)
from .cudnn_common import Launcher, buildable_plans, cudnn_dtype, handle, plan_index, require_cudnn
from .tactic import BuiltKernel, GpuInfo, TacticBase

# plans per heuristic mode for the fused conv in its assigned layouts (deduplicated across modes by
# cuDNN's plan name): mode A's top plans, then B's (a different heuristic ranking), then the fallback
# list. Building a runtime-fusion plan compiles a kernel, so these caps bound the cold build time.
MODE_PLANS = (("A", 5), ("B", 3))  # FALLBACK too cost 88 s cold at b32 (H100, 2026-11-26)
# the fp8 graphs: fewer (each plan is a runtime-fusion kernel compiled at build, about 2.5 s on an
# H100). Mode B ranks the first plans as A does, so this times A's first five; on ResNet-50 shapes
# they held the fastest plan, often not the first (bench/probe_conv_epilogue.py, RESULTS 2026-12-07)
FP8_MODE_PLANS = (("A", 3), ("B", 2))
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
        res = _planned(gr, t, mode, tensor_cores=precision != "fp32")  # TF32 tensor cores are not fp32 arithmetic
    except Exception as e:  # cuDNN says why (unsupported graph, no engine, ...)
        res = _reason("cuDNN", mode, e)
    _GRAPHS[key] = res
    return res


def _planned(gr, t: dict, mode: str, tensor_cores: bool = True) -> "_Graph":
    """Validate a built-up graph and make its execution plans for heuristic ``mode`` (raises
    cuDNN's error where it cannot)."""
    import cudnn  # noqa: PLC0415

    gr.validate()
    gr.build_operation_graph()
    gr.create_execution_plans([getattr(cudnn.heur_mode, mode)])
    if not tensor_cores:
        gr.deselect_numeric_notes([cudnn.numerical_note.TENSOR_CORE])
    gr.check_support()
    return _Graph(gr, t, mode)


def _reason(label: str, mode: str, e: Exception) -> str:
    return f"{label} ({mode}): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]


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


# ----------------------------------------------------------------------------- fp8 convolution
_CODE = quant.ELEMENT["fp8"]
_FP8_MAX = float(quant.QMAX["fp8"])
_FP8_FLOATS = ("float16", "float32")  # the float activations an fp8 layer reads and writes


def _same_scale(a, b) -> bool:
    return a is not None and b is not None and np.float32(a) == np.float32(b)


def _fp8_problem(layer: Layer) -> dict | str:
    """What the fp8 graph and launches need, or why ``cudnn.conv_fp8`` cannot run the layer."""
    why = require_op(layer, CONV_OPS, "a convolution") or check_layer(layer, "fp8") or require_activation(layer)
    if why:
        return why
    a = layer.attrs
    if not int(a.get("q_weight_const", 1)):
        return "the weight is an activation: quantized constant weights only"
    if int(a.get("q_input_zero_point", 0)) or int(a.get("q_residual_zero_point", 0)):
        return "fp8 has no zero point"
    g = _geometry(layer)
    if isinstance(g, str):
        return g
    cg = g["c"] // g["group"]
    if cg % 16:  # K of an e4m3 MMA step is 32 bytes; cuDNN pads the channels and runs far slower
        return (f"{cg} input channels per group, not a multiple of 16: cuDNN's fp8 plans for such a "
                "convolution run far below fp16 (ResNet-50's 3-channel stem: 590 us against 107 us, H100)")
    specs = layer.aligned_input_specs()
    x, y = specs[0], layer.output_specs[0]
    z = specs[3] if has_input(layer, 3) and len(specs) > 3 else None
    if has_input(layer, 2) and (len(specs) < 3 or specs[2] is None or specs[2].dtype != "float32"):
        return "float32 bias only"
    reads = {}  # "input" / "residual" -> (how it is read, its element type)
    for what, spec, scale in (("input", x, a["q_input_scale"]), ("residual", z, a.get("q_residual_scale"))):
        if spec is None:
            continue
        if spec.dtype == _CODE:
            if not quant.is_coded(spec) or not _same_scale(spec.scale, scale):
                return f"a {what} of codes with scale {spec.scale}, not the layer's {what} scale {scale}"
            reads[what] = ("codes", _CODE)
        elif spec.dtype in _FP8_FLOATS:
            if scale is not None and (spec.shape is None or int(np.prod(spec.shape)) % 4):
                return f"the {what}'s quantize launch takes four elements per thread ({spec.shape})"
            reads[what] = ("quantize" if scale is not None else "float", spec.dtype)
        else:
            return f"the {what} is {spec.dtype}: fp8 convolutions read {' or '.join(_FP8_FLOATS)} or {_CODE} codes"
    out_scale = a.get("q_output_scale")
    if y.dtype == _CODE:
        if not quant.is_coded(y) or not _same_scale(y.scale, out_scale):
            return f"an output of codes whose scale ({y.scale}) is not the layer's q_output_scale ({out_scale})"
    elif y.dtype not in _FP8_FLOATS:
        return f"the output is {y.dtype}: fp8 convolutions write {' or '.join(_FP8_FLOATS)} or {_CODE} codes"
    elif out_scale is not None:
        return f"q_output_scale on a {y.dtype} output"
    codes = quant.coded_outputs(layer)  # (the copy: Y as it is and, as the last output, its codes)
    if isinstance(codes, str):
        return codes
    if codes["copy"] not in (None, "fp8"):
        return f"a copy of {codes['copy']} codes"
    ins, outs = layer.attrs.get("in_layouts"), layer.attrs.get("out_layouts")
    # before the layout pass (precision assignment asks first) a 2-D convolution's graph is checked
    # channels-last, the layout the pass gives its tensors (it stores only 4-D tensors so)
    if ins or outs or len(x.shape or ()) != 4:
        layouts = _layouts(layer, {})
    else:
        layouts = ("nhwc", "nhwc", "nhwc")
    return {"g": g, "x": reads["input"], "z": reads.get("residual"), "y": y.dtype, "bias": has_input(layer, 2),
            "copy": codes["copy"] is not None, "layouts": layouts}


def _fp8_graph(layer: Layer, pr: dict, mode: str):
    """(graph, tensors, plan names) of the fp8 graph for this layer and heuristic mode, or a reason.
    The tensors, in the order ``run`` passes pointers: X, W, S (alpha per channel), B, Z, SZ (the
    residual codes' scale), SY (1 / q_output_scale or 1 / q_copy_scale), Y, YC (the copy)."""
    g = pr["g"]
    act, p = activation_of(layer)
    # what the graph reads: codes for X always (quantized first where needed), Z as codes or floats
    z_dt = None if pr["z"] is None else (_CODE if pr["z"][0] != "float" else pr["z"][1])
    sig = (g["n"], g["c"], g["m"], tuple(g["sp"]), tuple(g["k"]), tuple(g["strides"]), tuple(g["dilations"]),
           tuple(g["begin"]), tuple(g["end"]), pr["bias"], z_dt, pr["y"], pr["copy"], act, tuple(sorted(p.items())),
           pr["layouts"])
    key = ("fp8", sig, mode)
    if key in _GRAPHS:
        return _GRAPHS[key]
    import cudnn  # noqa: PLC0415

    D = cudnn.data_type
    xl, zl, yl = pr["layouts"]
    xd = [g["n"], g["c"], *g["sp"]]
    wd = [g["m"], g["c"] // g["group"], *g["k"]]
    yd = [g["n"], g["m"], *g["out"]]
    cd, cs = [1, g["m"]] + [1] * len(g["sp"]), [g["m"], 1] + [1] * len(g["sp"])
    one = [1] * len(yd)
    try:
        gr = cudnn.pygraph(io_data_type=D.FP8_E4M3, intermediate_data_type=D.FLOAT, compute_data_type=D.FLOAT,
                           handle=handle())
        t = {"X": gr.tensor(name="X", dim=xd, stride=strides(xd, xl), data_type=D.FP8_E4M3),
             "W": gr.tensor(name="W", dim=wd, stride=strides(wd, "nhwc"), data_type=D.FP8_E4M3)}
        y = gr.conv_fprop(image=t["X"], weight=t["W"], pre_padding=g["begin"], post_padding=g["end"],
                          stride=g["strides"], dilation=g["dilations"], compute_data_type=D.FLOAT)
        y.set_data_type(D.FLOAT)
        t["S"] = gr.tensor(name="S", dim=cd, stride=cs, data_type=D.FLOAT)
        y = gr.mul(a=y, b=t["S"], compute_data_type=D.FLOAT)
        if pr["bias"]:
            t["B"] = gr.tensor(name="B", dim=cd, stride=cs, data_type=D.FLOAT)
            y = gr.add(a=y, b=t["B"], compute_data_type=D.FLOAT)
        if z_dt:
            t["Z"] = gr.tensor(name="Z", dim=yd, stride=strides(yd, zl), data_type=cudnn_dtype(z_dt))
            z = t["Z"]
            if z_dt == _CODE:
                t["SZ"] = gr.tensor(name="SZ", dim=one, stride=one, data_type=D.FLOAT)
                z = gr.mul(a=z, b=t["SZ"], compute_data_type=D.FLOAT)
            y = gr.add(a=y, b=z, compute_data_type=D.FLOAT)
        y = _activation(gr, y, act, p)
        if y is None:
            _GRAPHS[key] = f"no cuDNN pointwise op for activation {act!r}"
            return _GRAPHS[key]
        codes = None
        if pr["y"] == _CODE or pr["copy"]:  # e4m3fn saturates (no inf): clamp, then cuDNN rounds
            t["SY"] = gr.tensor(name="SY", dim=one, stride=one, data_type=D.FLOAT)
            codes = gr.relu(input=gr.mul(a=y, b=t["SY"], compute_data_type=D.FLOAT), lower_clip=-_FP8_MAX,
                            upper_clip=_FP8_MAX)
            if pr["y"] == _CODE:
                y, codes = codes, None
        y.set_output(True).set_dim(yd).set_stride(strides(yd, yl)).set_data_type(cudnn_dtype(pr["y"]))
        t["Y"] = y
        if codes is not None:
            codes.set_output(True).set_dim(yd).set_stride(strides(yd, yl)).set_data_type(D.FP8_E4M3)
            t["YC"] = codes
        res = _planned(gr, t, mode)
    except Exception as e:  # cuDNN says why (unsupported graph, no engine, ...)
        res = _reason("cuDNN fp8", mode, e)
    _GRAPHS[key] = res
    return res


class CudnnConvFp8(TacticBase):
    """``cudnn.conv_fp8``: see the module doc."""

    name = "cudnn.conv_fp8"
    formats = ("fp8",)
    writes_codes = ("output", "copy")
    supports_cost = 1  # validates a cuDNN graph

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        if precision != "fp8":
            return "runs fp8 layers only"
        if gpu is not None and gpu.sm < 89:
            return f"FP8 tensor cores need sm_89 or newer ({gpu.arch})"
        why = require_cupy() or require_cudnn()
        if why:
            return why
        pr = _fp8_problem(layer)
        if isinstance(pr, str):
            return pr
        res = _fp8_graph(layer, pr, "A")
        return res if isinstance(res, str) else None

    def configs(self, layer: Layer, precision: str, gpu: GpuInfo) -> list[dict]:
        pr = _fp8_problem(layer)
        layout = "nhwc" if "nhwc" in pr["layouts"] else "nchw"  # the report's name; the graph uses the three
        out, names = [], set()
        for mode, cap in FP8_MODE_PLANS:
            res = _fp8_graph(layer, pr, mode)
            if isinstance(res, str):
                continue
            for i, name in res.plans(limit=cap, skip=frozenset(names)):
                names.add(name)
                out.append({"layout": layout, "mode": mode, "plan": name, "index": i})
        return out

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        import cudnn  # noqa: PLC0415
        import cupy as cp  # noqa: PLC0415

        from .cublaslt_quant import QuantizeLaunch  # noqa: PLC0415

        pr = _fp8_problem(layer)
        if isinstance(pr, str):
            raise ValueError(pr)
        res = _fp8_graph(layer, pr, config.get("mode", "A"))
        if isinstance(res, str):
            raise RuntimeError(res)
        gr, t = res.gr, res.t
        index = res.index_of(config, layer)
        ws = int(gr.get_workspace_size_plan_at_index(index))
        g, a = pr["g"], layer.attrs
        w = weights[layer.inputs[1]]
        w = (w.view(cp.uint8) if w.dtype != cp.uint8 else w).reshape([g["m"], g["c"] // g["group"], *g["k"]])
        w = cp.ascontiguousarray(w.transpose(0, *range(2, w.ndim), 1))  # KRSC, as the graph declares it
        alpha = quant.output_scale(a["q_input_scale"], np.asarray(a["q_weight_scale"], np.float32)).reshape(-1)
        dev = {"W": w, "S": cp.asarray(np.broadcast_to(alpha, (g["m"],)).astype(np.float32))}
        if pr["bias"]:
            dev["B"] = cp.asarray(weights[layer.inputs[2]], dtype=cp.float32).reshape(-1)
        if "SZ" in t:
            dev["SZ"] = cp.asarray([np.float32(a["q_residual_scale"])], dtype=cp.float32)
        if "SY" in t:
            s_out = a["q_output_scale"] if pr["y"] == _CODE else a["q_copy_scale"]
            dev["SY"] = cp.asarray([np.float32(1.0) / np.float32(s_out)], dtype=cp.float32)
        out: dict[str, bytes] = {}
        quantize = {}  # input position -> (launch, workspace offset)
        offset = 0
        for pos, scale, read in ((0, a["q_input_scale"], pr["x"]), (3, a.get("q_residual_scale"), pr["z"])):
            if read is not None and read[0] == "quantize":
                n = int(np.prod(layer.aligned_input_specs()[pos].shape))
                q = QuantizeLaunch("fp8", read[1], n, scale, 0, gpu, binaries, out, name=f"wb_quant_fp8_{read[1]}")
                quantize[pos] = (q, offset)
                offset += q.bytes
        h = handle()
        launch = Launcher(gr, index, t)
        names = list(t)
        fixed = {k: ptr(v) for k, v in dev.items()}
        align = 256

        def run(inputs, outputs, workspace, stream):
            base = -(-ptr(workspace) // align) * align
            got = dict(fixed)
            for pos, key in ((0, "X"), (3, "Z")):
                if key not in t:
                    continue
                if pos in quantize:
                    q, off = quantize[pos]
                    q(inputs[pos], base + off, stream)
                    got[key] = base + off
                else:
                    got[key] = ptr(inputs[pos])
            got["Y"] = ptr(outputs[0])
            if "YC" in t:
                got["YC"] = ptr(outputs[-1])
            cudnn.set_stream(h, stream_ptr(stream))
            launch([got[k] for k in names], base + offset if ws else 0, h)

        return BuiltKernel(run=run, workspace_bytes=align + offset + ws, binaries=out,
                           info={"fast_launch": launch.raw is not None, "plan": config.get("plan"),
                                 "quantize_launches": len(quantize)},
                           keepalive=(gr, dev, launch))


TACTICS = [CudnnConv(), CudnnConvFp8()]
