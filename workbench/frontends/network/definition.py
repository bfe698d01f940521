"""The network-definition API: write a model layer by layer instead of loading an ONNX file.

    net = wb.NetworkDefinition("mlp", opset=21)
    x = net.input("x", "float32", ("batch", 784))
    h = net.relu(x @ net.constant(w1) + net.constant(b1))
    net.output(net.softmax(net.gemm(h, w2, b2)), name="probs")
    network = net.finish()          # a Network, the same kind load_onnx returns

The definition is an onnx-ir graph under construction. Every layer is checked the moment it is
added (ONNX's node checker, then ONNX's per-node type and shape inference), so a rank mismatch or
a bad attribute raises at the line that caused it, not at build time. Tensors are small handles
(:class:`Tensor`) whose Python operators add layers. The typed helpers (``conv``, ``gemm``, ...)
live in :mod:`workbench.frontends.network.layers`; :meth:`NetworkDefinition.op` reaches any ONNX
operator.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
from onnx import checker, shape_inference

from ..._version import __version__
from ...dtypes import ONNX_CODES, to_numpy
from ...errors import UnsupportedModelError
from ...ir.attrs import to_attr
from ..onnx.loader import network_from_proto
from ..onnx.safe_read import check_opsets
from .layers import Layers
from .tensor import (  # noqa: F401  (the errors are part of this module's API)
    DuplicateNameError,
    ForeignTensorError,
    InvalidLayerError,
    MissingOutputError,
    NetworkDefinitionError,
    Tensor,
    UnknownDTypeError,
    UnsupportedOpError,
    _ir_dims,
    canonical_dtype,
)

# Below 13 the helpers would need another spelling of Softmax, Squeeze, Split, ... for every layer.
MIN_API_OPSET = 13
DEFAULT_OPSET = 21
# constants up to this many elements are handed to per-node inference so that Reshape / Slice /
# Resize with constant parameters get concrete output shapes
_INFERENCE_DATA_LIMIT = 4096


class NetworkDefinition(Layers):
    """A network under construction. ``finish()`` validates it and returns a :class:`Network`."""

    def __init__(self, name: str = "network", opset: int = DEFAULT_OPSET):
        newest = onnx.defs.onnx_opset_version()
        if not isinstance(opset, int) or not MIN_API_OPSET <= opset <= newest:
            raise UnsupportedModelError(f"the network API supports ai.onnx opsets {MIN_API_OPSET}..{newest}, got {opset!r}")
        self.name = name
        self.opset = opset
        self._graph = ir.Graph([], [], nodes=[], opset_imports={"": opset}, name=name)
        # node and value names share one namespace: "conv_0" names a layer and its output
        self._names: set[str] = set()
        self._counters: Counter = Counter()
        self._const_cache: dict[tuple, Tensor] = {}
        self._checker = checker.C.CheckerContext()
        self._checker.ir_version = self._ir_version()
        self._checker.opset_imports = {"": opset}

    # ---- names -------------------------------------------------------------------------------
    def _claim(self, name: str, what: str) -> str:
        if not isinstance(name, str) or not name:
            raise NetworkDefinitionError(f"{what} name must be a non-empty string, got {name!r}")
        if name in self._names:
            raise DuplicateNameError(f"name {name!r} is already used in network {self.name!r} ({what} names must be unique)")
        self._names.add(name)
        return name

    def _fresh(self, base: str) -> str:
        while True:
            candidate = f"{base}_{self._counters[base]}"
            self._counters[base] += 1
            if candidate not in self._names:
                self._names.add(candidate)
                return candidate

    def _ir_version(self) -> int:
        return onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", self.opset)])

    # ---- graph inputs and constants ----------------------------------------------------------
    def input(self, name: str, dtype, shape) -> Tensor:
        """A graph input. ``shape`` dims are ints, names of symbolic dims ("batch") or None."""
        dt = canonical_dtype(dtype)
        dims = _ir_dims(shape)
        value = ir.Value(name=self._claim(name, "input"), type=ir.TensorType(ir.DataType(ONNX_CODES[dt])), shape=dims)
        self._graph.inputs.append(value)
        return Tensor(self, value)

    def constant(self, value, dtype=None, name: str | None = None) -> Tensor:
        """A constant (an initializer). NumPy arrays keep their dtype unless ``dtype`` is given;
        Python floats and lists of them become float32 (the dtype of nearly every model)."""
        if isinstance(value, Tensor):
            raise NetworkDefinitionError(f"constant() takes data, not a Tensor ({value.name!r})")
        if dtype is not None:
            array = np.asarray(value, dtype=to_numpy(canonical_dtype(dtype)))
        elif isinstance(value, (np.ndarray, np.generic)):
            array = np.asarray(value)
        else:
            array = np.asarray(value)
            if array.dtype == np.float64:
                array = array.astype(np.float32)
        dt = canonical_dtype(array.dtype)
        key = None
        if name is None and array.size <= 64:  # small helper constants (axes, scalars) are shared
            key = (dt, array.shape, array.tobytes())
            if key in self._const_cache:
                return self._const_cache[key]
        vname = self._claim(name, "constant") if name is not None else self._fresh("const")
        # a copy: later edits to the caller's array must not change the network (and it keeps 0-d shape)
        tensor = ir.tensor(np.array(array, order="C", copy=True), name=vname)
        v = ir.Value(name=vname, type=ir.TensorType(tensor.dtype), shape=ir.Shape(array.shape), const_value=tensor)
        self._graph.register_initializer(v)
        out = Tensor(self, v)
        if key is not None:
            self._const_cache[key] = out
        return out

    def tensor(self, x, like: Tensor | None = None) -> Tensor:
        """``x`` as a Tensor of this network: a Tensor is checked to belong here; data becomes a
        constant, with Python numbers taking the dtype of ``like`` (so ``t * 2.0`` stays float16)."""
        if isinstance(x, Tensor):
            if x._net is not self:
                raise ForeignTensorError(f"tensor {x.name!r} belongs to network {x._net.name!r}, not {self.name!r}")
            return x
        if isinstance(x, (np.ndarray, np.generic)):
            return self.constant(x)
        if isinstance(x, (bool, int, float, list, tuple)):
            if like is not None and like.dtype is not None:
                return self.constant(x, dtype=like.dtype)
            return self.constant(x)
        raise NetworkDefinitionError(f"expected a Tensor, a NumPy array or a number, got {type(x).__name__}")

    # ---- layers --------------------------------------------------------------------------------
    def op(self, op_type: str, inputs, outputs=1, *, domain: str = "", name: str | None = None, **attrs):
        """Add any ONNX operator. ``inputs``: Tensors, arrays (become constants) or None (an
        omitted optional input). ``outputs``: a count or a list of output names. Attributes are
        keyword arguments (None values are left out). Returns a Tensor, or a tuple of them."""
        return self._add(op_type, inputs, outputs, domain, name, None, attrs)

    def _add(self, op_type, inputs, outputs, domain, name, base, attrs):
        """``op`` with ``base``: the stem of the automatic layer name ("batch_norm" -> batch_norm_0)."""
        if isinstance(inputs, (Tensor, np.ndarray)):
            inputs = [inputs]
        ins = [None if x is None else self.tensor(x) for x in inputs]
        schema = self._schema(op_type, domain)
        if isinstance(outputs, int):
            if outputs < 1:
                raise NetworkDefinitionError(f"{op_type} needs at least one output, got outputs={outputs}")
            out_names = None
            n_out = outputs
        else:
            out_names = list(outputs)
            n_out = len(out_names)
        taken_before, counters_before = set(self._names), self._counters.copy()
        try:
            node_name = self._claim(name, "layer") if name is not None else self._fresh(base or _snake(op_type))
            if out_names is not None:
                out_names = [self._claim(n, "tensor") for n in out_names]
            elif n_out == 1:
                out_names = [node_name]
            else:
                out_names = [self._fresh(f"{node_name}_out") for _ in range(n_out)]
            node = ir.Node(domain, op_type, [None if t is None else t._value for t in ins],
                           _attributes(attrs, node_name), num_outputs=n_out, name=node_name)
        except Exception:
            self._names, self._counters = taken_before, counters_before  # a rejected layer leaves no trace
            raise
        for v, n in zip(node.outputs, out_names):
            v.name = n
        try:
            self._validate(node, schema)
        except Exception:
            for i in range(len(node.inputs)):  # detach, so the inputs do not list a phantom use
                node.replace_input_with(i, None)
            self._names, self._counters = taken_before, counters_before
            raise
        self._graph.append(node)
        handles = tuple(Tensor(self, v) for v in node.outputs)
        return handles[0] if n_out == 1 else handles

    def _schema(self, op_type: str, domain: str):
        if domain in ("", "ai.onnx"):
            try:
                return onnx.defs.get_schema(op_type, self.opset, "")
            except onnx.defs.SchemaError:
                try:
                    since = onnx.defs.get_schema(op_type, onnx.defs.onnx_opset_version(), "").since_version
                except onnx.defs.SchemaError:
                    raise UnsupportedOpError(f"ONNX has no operator {op_type!r}") from None
                raise UnsupportedOpError(f"{op_type} needs opset >= {since}; this network uses opset {self.opset}") from None
        if not isinstance(domain, str) or not domain:
            raise NetworkDefinitionError(f"domain must be a string, got {domain!r}")
        self._graph.opset_imports.setdefault(domain, 1)
        return None  # no schema: outputs have unknown type until the builder infers them

    def _validate(self, node: ir.Node, schema) -> None:
        """ONNX's node checker, then per-node type/shape inference that types the outputs."""
        proto = ir.serde.serialize_node(node)
        where = f"layer {node.name!r} ({node.op_type})"
        if schema is None:
            return
        try:
            checker.check_node(proto, self._checker)
        except checker.ValidationError as exc:
            raise InvalidLayerError(f"{where}: {_first_line(exc)}") from None
        types, data = {}, {}
        for v in node.inputs:
            if v is None:
                continue
            if not isinstance(v.type, ir.TensorType):
                return  # an input of unknown type (a custom op's output): nothing to infer from
            dims = None if v.shape is None else [d if isinstance(d, int) else d.value for d in v.shape]
            types[v.name] = onnx.helper.make_tensor_type_proto(int(v.type.dtype), dims)
            if v.const_value is not None and v.const_value.size <= _INFERENCE_DATA_LIMIT:
                data[v.name] = ir.serde.serialize_tensor(v.const_value)
        opsets = [onnx.helper.make_opsetid(d, ver) for d, ver in self._graph.opset_imports.items()]
        try:
            inferred = shape_inference.infer_node_outputs(schema, proto, types, data, opset_imports=opsets,
                                                          ir_version=self._checker.ir_version)
        except (shape_inference.InferenceError, checker.ValidationError) as exc:
            shapes = ", ".join(f"{v.name}: {Tensor(self, v).dtype}{list(Tensor(self, v).shape or [])}"
                               for v in node.inputs if v is not None)
            raise InvalidLayerError(f"{where}: {_first_line(exc)} (inputs {shapes})") from None
        for v in node.outputs:
            tp = inferred.get(v.name)
            if tp is None or not tp.HasField("tensor_type") or not tp.tensor_type.elem_type:
                continue
            v.type = ir.TensorType(ir.DataType(tp.tensor_type.elem_type))
            if tp.tensor_type.HasField("shape"):
                v.shape = ir.Shape([d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                    for d in tp.tensor_type.shape.dim])

    # ---- outputs and finishing -----------------------------------------------------------------
    def output(self, tensor: Tensor, name: str | None = None) -> Tensor:
        """Mark ``tensor`` as a network output, renamed to ``name`` when given. Inputs, constants
        and tensors already marked are passed through an Identity layer (ONNX needs distinct values)."""
        t = self.tensor(tensor)
        if t.dtype is None:
            raise NetworkDefinitionError(f"output {t.name!r} has no known dtype (made by a custom-domain op); "
                                         "cast it or wrap it in an op with a known schema")
        v = t._value
        is_output = any(o is v for o in self._graph.outputs)
        if v.producer() is None or is_output:
            t = self._add("Identity", [t], [name] if name else 1, "", None, "output", {})
        elif name is not None and name != v.name:
            self._claim(name, "output")
            v.name = name
        self._graph.outputs.append(t._value)
        return t

    def to_onnx(self) -> onnx.ModelProto:
        """The network as an ONNX ModelProto (for saving, or running with onnxruntime)."""
        if not self._graph.outputs:
            raise MissingOutputError(f"network {self.name!r} has no outputs; mark one with net.output(tensor)")
        model = ir.Model(self._graph, ir_version=self._ir_version(), producer_name="workbench.network",
                         producer_version=__version__)
        proto = ir.serde.serialize_model(model)
        used = {i for n in proto.graph.node for i in n.input} | {o.name for o in proto.graph.output}
        kept = [t for t in proto.graph.initializer if t.name in used]  # constants of rejected layers
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(kept)
        return proto

    def finish(self):
        """Validate the whole network (onnx checker with full shape inference) and return a
        :class:`~workbench.ir.network.Network` for ``workbench.build``. The definition stays
        usable; later changes do not affect the returned Network."""
        proto = self.to_onnx()
        try:
            checker.check_model(proto, full_check=True)
        except (checker.ValidationError, shape_inference.InferenceError) as exc:
            raise InvalidLayerError(f"network {self.name!r} is not valid ONNX: {_first_line(exc)}") from None
        check_opsets(proto)
        return network_from_proto(proto, source=f"<NetworkDefinition {self.name}>", inline_functions=True)

    def __repr__(self) -> str:
        return (f"<NetworkDefinition {self.name!r} opset={self.opset} inputs={len(self._graph.inputs)} "
                f"layers={len(self._graph)} outputs={len(self._graph.outputs)}>")


def _snake(op_type: str) -> str:
    out = []
    for i, ch in enumerate(op_type):
        if ch.isupper() and i and (not op_type[i - 1].isupper() or (i + 1 < len(op_type) and op_type[i + 1].islower())):
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _attributes(attrs: dict, where: str) -> list[ir.Attr]:
    out = []
    for key, val in attrs.items():
        if val is None:
            continue
        if isinstance(val, (list, tuple)) and not val:  # a user's [] could mean ints, floats or strings
            raise NetworkDefinitionError(f"layer {where!r}: attribute {key!r} is an empty list; its type is ambiguous")
        try:
            out.append(to_attr(key, val))
        except (TypeError, ValueError) as exc:
            raise NetworkDefinitionError(f"layer {where!r}: {exc}") from None
    return out


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
