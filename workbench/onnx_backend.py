"""workbench as an ``onnx.backend.base.Backend``, so that onnx's own backend tests run against it.

    import workbench.onnx_backend as backend
    rep = backend.prepare(model_proto, "CPU")
    outputs = rep.run([x])
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.base import Backend, BackendRep

from .builder import BuilderConfig, build
from .builder.targets import gpu_available
from .frontends.onnx.loader import network_from_proto
from .frontends.onnx.safe_read import check_opsets, read_model


def _device(device: str) -> str:
    d = (device or "CPU").upper().split(":")[0]
    return {"CPU": "cpu", "CUDA": "gpu", "GPU": "gpu"}.get(d, d.lower())


def _as_value(v):
    """onnx's test data holds NumPy scalars for 0-d inputs and TensorProtos for some dtypes."""
    if isinstance(v, onnx.TensorProto):
        return numpy_helper.to_array(v)
    if isinstance(v, np.generic):
        return np.asarray(v)
    if isinstance(v, list):
        return [_as_value(x) for x in v]
    return v


def _single_node_model(node, graph_inputs, opset, outputs_info) -> onnx.ModelProto:
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    imports = [onnx.helper.make_opsetid("", opset if (opset and not domain) else onnx.defs.onnx_opset_version())]
    if domain:
        try:
            version = opset or onnx.defs.get_schema(node.op_type, domain=domain).since_version
        except onnx.defs.SchemaError:
            version = opset or 1
        imports.append(onnx.helper.make_opsetid(domain, version))
    outputs = [o for o in node.output if o]
    if outputs_info:
        graph_outputs = [onnx.helper.make_tensor_value_info(o, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dt)), shape)
                         for o, (dt, shape) in zip(outputs, outputs_info)]
    else:
        graph_outputs = [onnx.ValueInfoProto(name=o) for o in outputs]
    graph = onnx.helper.make_graph([node], "run_node", graph_inputs, graph_outputs)
    model = onnx.helper.make_model(graph, opset_imports=imports)
    if outputs_info:
        return model
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type for v in list(inferred.graph.value_info) + list(inferred.graph.output)
             if v.type.HasField("tensor_type") or v.type.HasField("sequence_type")}
    for out in model.graph.output:
        if out.name in types:
            out.type.CopyFrom(types[out.name])
        else:
            raise ValueError(f"run_node: cannot infer the type of output {out.name!r} of {node.op_type}; pass outputs_info")
    return model


class WorkbenchRep(BackendRep):
    def __init__(self, engine):
        self.engine = engine
        self.context = engine.create_context()

    def run(self, inputs: Any, **kwargs) -> tuple:
        names = [s.name for s in self.engine.inputs]
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray) or not isinstance(inputs, (list, tuple)):
                inputs = [inputs]
            feeds = {n: v for n, v in zip(names, inputs)}
        # onnx's test data holds NumPy scalars (np.float32(...)) for 0-d inputs
        feeds = {k: _as_value(v) for k, v in feeds.items()}
        outs = self.context.run(feeds)
        return tuple(outs[s.name] for s in self.engine.outputs)


class WorkbenchBackend(Backend):
    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> WorkbenchRep:
        super().prepare(model, device, **kwargs)
        proto = read_model(model, base_dir=kwargs.pop("base_dir", None))
        check_opsets(proto)
        net = network_from_proto(proto, source="<onnx backend>")
        config = BuilderConfig(device=_device(device), **kwargs)
        return WorkbenchRep(build(net, config))

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs) -> tuple:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU",
                 outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None, **kwargs) -> tuple:
        """Run one node: wrap it in a model whose inputs take the arrays' dtypes and shapes and whose
        output types come from ``outputs_info`` or from ONNX shape inference. (The base class's
        check_node knows only the default domain; the wrapped model is checked whole in prepare.)"""
        values = list(inputs.values()) if isinstance(inputs, dict) else list(inputs)
        names = [n for n in node.input if n]
        arrays = [_as_value(v) for v in values]
        graph_inputs = [
            onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype),
                                               np.asarray(a).shape)
            for n, a in zip(names, arrays)
        ]
        opset = kwargs.pop("opset_version", None)
        model = _single_node_model(node, graph_inputs, opset, outputs_info)
        return cls.run_model(model, {n: a for n, a in zip(names, arrays)}, device, **kwargs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        d = _device(device)
        if d == "cpu":
            return True
        if d == "gpu":
            return gpu_available()
        return False


prepare = WorkbenchBackend.prepare
run_model = WorkbenchBackend.run_model
run_node = WorkbenchBackend.run_node
supports_device = WorkbenchBackend.supports_device
is_compatible = WorkbenchBackend.is_compatible
