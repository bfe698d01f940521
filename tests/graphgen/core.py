"""The graph builder and the choice source behind every generated model.

A generated model is a sequence of *choices* (``chooser.choose(key, options)``) made by block
functions that write ONNX nodes into a :class:`GraphBuilder`. Under Hypothesis the choices are drawn
(and shrink towards the first option, so put the plain variant first); in fixed regression cases they
come from a dict of overrides. Every choice is recorded, so a failing example prints the exact list
of choices that rebuilds it (``FixedChooser(record)``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NP2ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float16): TensorProto.FLOAT16,
    np.dtype(np.float64): TensorProto.DOUBLE,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.bool_): TensorProto.BOOL,
}


class Chooser:
    """Base: records every choice."""

    def __init__(self):
        self.record: list[tuple[str, object]] = []

    def _pick(self, key, options):  # pragma: no cover - abstract
        raise NotImplementedError

    def choose(self, key: str, options):
        options = list(options)
        value = self._pick(key, options)
        self.record.append((key, value))
        return value

    def flag(self, key: str, p_true: float = 0.5) -> bool:
        # shrinks to False (the plain variant)
        return bool(self.choose(key, [False, True]))

    def integer(self, key: str, lo: int, hi: int) -> int:
        return int(self.choose(key, range(lo, hi + 1)))


class HypothesisChooser(Chooser):
    def __init__(self, draw):
        super().__init__()
        self.draw = draw

    def _pick(self, key, options):
        from hypothesis import strategies as st

        if len(options) == 1:
            return options[0]
        if isinstance(options, list) and options and all(isinstance(o, int) and not isinstance(o, bool) for o in options) \
                and options == list(range(options[0], options[0] + len(options))):
            return self.draw(st.integers(options[0], options[-1]), label=key)
        return self.draw(st.sampled_from(options), label=key)


class FixedChooser(Chooser):
    """Choices from ``overrides`` (a dict key -> value, or a recorded list of (key, value) replayed in
    order); anything else is drawn from a seeded ``random.Random``."""

    def __init__(self, overrides=None, seed: int = 0):
        super().__init__()
        self.rng = random.Random(seed)
        self.queue = None
        self.overrides = {}
        if isinstance(overrides, list):
            self.queue = list(overrides)
        elif overrides:
            self.overrides = dict(overrides)

    def _pick(self, key, options):
        if self.queue:
            k, v = self.queue.pop(0)
            assert k == key, f"replay diverged: recorded {k!r}, generator asks {key!r}"
            return v
        if key in self.overrides:
            v = self.overrides[key]
            assert v in options, f"override {key}={v!r} not among {options!r}"
            return v
        return self.rng.choice(options)


@dataclass
class Case:
    model: onnx.ModelProto
    feeds: dict
    shapes: dict
    record: list
    tags: list = field(default_factory=list)
    expected: dict = field(default_factory=dict)  # output name -> shape the generator tracked

    def describe(self) -> str:
        return onnx.printer.to_text(self.model.graph)


class GraphBuilder:
    """Accumulates nodes, initializers and inputs, tracking every value's (shape, dtype)."""

    def __init__(self, chooser: Chooser, opset: int, seed: int):
        self.c = chooser
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.inputs: list = []
        self.outputs: list[str] = []
        self.info: dict[str, tuple[tuple, np.dtype]] = {}
        self.feeds: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple] = {}
        self.tags: list[str] = []
        self.counter = 0
        self.pool: list[str] = []  # fp32 activations available as residual / skip operands

    # -- names and values -------------------------------------------------------------------
    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.counter}"

    def shape(self, name):
        return self.info[name][0]

    def dtype(self, name):
        return self.info[name][1]

    def tag(self, t: str):
        self.tags.append(t)

    def const(self, value, dtype=np.float32, prefix="c") -> str:
        arr = np.asarray(value, dtype=dtype)
        name = self.fresh(prefix)
        self.inits.append(numpy_helper.from_array(arr, name))
        self.info[name] = (tuple(arr.shape), np.dtype(dtype))
        return name

    def ints(self, values, prefix="i") -> str:
        return self.const(np.asarray(values, dtype=np.int64), np.int64, prefix)

    def weight(self, shape, fan_in, prefix="w", scale=1.0) -> str:
        w = self.rng.standard_normal(shape) * (scale / np.sqrt(max(fan_in, 1)))
        return self.const(w, np.float32, prefix)

    def bias(self, shape, prefix="b", scale=0.3) -> str:
        return self.const(self.rng.standard_normal(shape) * scale, np.float32, prefix)

    def input(self, shape, dtype=np.float32, data=None, dynamic=(), prefix="x") -> str:
        """A graph input; dims listed in ``dynamic`` (index -> symbol) are symbolic in the model
        and fixed through BuilderConfig(shapes=...)."""
        name = self.fresh(prefix)
        dims = list(shape)
        for idx, sym in dict(dynamic).items():
            dims[idx] = sym
        self.inputs.append(helper.make_tensor_value_info(name, NP2ONNX[np.dtype(dtype)], dims))
        if data is None:
            data = self.rng.standard_normal(shape)
        self.feeds[name] = np.asarray(data, dtype=dtype).reshape(shape)
        self.shapes[name] = tuple(shape)
        self.info[name] = (tuple(shape), np.dtype(dtype))
        return name

    def node(self, op, inputs, shape=None, dtype=np.float32, outputs=1, shapes=None, dtypes=None, **attrs):
        """Add a node; returns its output name (or list of names when outputs > 1)."""
        names = [self.fresh(op.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), names, name=self.fresh(op), **attrs))
        if outputs == 1:
            self.info[names[0]] = (tuple(shape) if shape is not None else None, np.dtype(dtype))
            return names[0]
        for i, n in enumerate(names):
            self.info[n] = (tuple(shapes[i]), np.dtype((dtypes or [dtype] * outputs)[i]))
        return names

    # -- opset-dependent spellings ----------------------------------------------------------
    def reduce(self, op, x, axes, keepdims=1):
        shape = list(self.shape(x))
        r = len(shape)
        ax = sorted(a % r for a in axes)
        out = [1 if i in ax else d for i, d in enumerate(shape)] if keepdims else [d for i, d in enumerate(shape) if i not in ax]
        if self.opset >= 18 or op == "ReduceSum":
            return self.node(op, [x, self.ints(axes)], out, self.dtype(x), keepdims=keepdims)
        return self.node(op, [x], out, self.dtype(x), axes=list(axes), keepdims=keepdims)

    def unsqueeze(self, x, axes):
        shape = list(self.shape(x))
        r = len(shape) + len(axes)
        for a in sorted(a % r for a in axes):
            shape.insert(a, 1)
        return self.node("Unsqueeze", [x, self.ints(axes)], shape, self.dtype(x))

    def reshape(self, x, target, out_shape, allowzero=None):
        attrs = {} if allowzero is None else {"allowzero": allowzero}
        return self.node("Reshape", [x, self.ints(target)], out_shape, self.dtype(x), **attrs)

    def transpose(self, x, perm):
        s = self.shape(x)
        return self.node("Transpose", [x], [s[p] for p in perm], self.dtype(x), perm=list(perm))

    def binary(self, op, a, b, dtype=None):
        sa, sb = self.shape(a), self.shape(b)
        out = np.broadcast_shapes(sa, sb)
        return self.node(op, [a, b], out, dtype or self.dtype(a))

    def unary(self, op, x, **attrs):
        return self.node(op, [x], self.shape(x), self.dtype(x), **attrs)

    # -- finishing --------------------------------------------------------------------------
    def output(self, name):
        if name not in self.outputs and name not in self.feeds:
            self.outputs.append(name)

    def finish(self) -> Case:
        outs = [helper.make_tensor_value_info(n, NP2ONNX[self.dtype(n)], None) for n in self.outputs]
        graph = helper.make_graph(self.nodes, "generated", self.inputs, outs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name="graphgen")
        model.ir_version = min(model.ir_version, 10)
        return Case(model, dict(self.feeds), dict(self.shapes), list(self.c.record), list(self.tags),
                    {n: self.shape(n) for n in self.outputs})
