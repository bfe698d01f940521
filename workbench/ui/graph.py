"""The graph view widget (Python side) and the graph data it draws.

The browser half is ``workbench/static/graph.js`` (built from ``extension/``): an anywidget ES module
that lays the graph out with elkjs. Python sends plain data — nodes, edges, labels — in the ``graph``
trait; the browser sends back ``selected`` (the clicked layer's name) and ``layout_ms``.
Node ids are generated here ("L3", "L3c1", "in0"), so model strings never become DOM ids; the
browser renders every name through textContent only.
"""

from __future__ import annotations

import pathlib

import anywidget
import traitlets

_ESM = pathlib.Path(__file__).resolve().parent.parent / "static" / "graph.js"
COLOR_MODES = ("precision", "op", "time", "error")


class GraphView(anywidget.AnyWidget):
    """Engine (or model) graph: fused layers as groups of their ONNX nodes, colour by
    precision / op type / share of time / error vs fp32 (log scale, from the accuracy report),
    shapes on edges, zoom, pan, search, click to select."""

    _esm = _ESM
    graph = traitlets.Dict(default_value={"nodes": [], "edges": []}).tag(sync=True)
    color_by = traitlets.Unicode("precision").tag(sync=True)  # "precision" | "op" | "time" | "error"
    timing = traitlets.Dict(default_value={}).tag(sync=True)  # layer name -> % of time
    errors = traitlets.Dict(default_value={}).tag(sync=True)  # layer name -> relative error vs fp32
    selected = traitlets.Unicode("").tag(sync=True)  # layer name clicked in the browser
    search = traitlets.Unicode("").tag(sync=True)
    height = traitlets.Int(560).tag(sync=True)
    layout_ms = traitlets.Float(-1.0).tag(sync=True)  # written by the browser after each layout

    @traitlets.validate("color_by")
    def _check_color_by(self, proposal):
        if proposal["value"] not in COLOR_MODES:
            raise traitlets.TraitError("color_by must be one of " + ", ".join(repr(m) for m in COLOR_MODES))
        return proposal["value"]

    @classmethod
    def from_engine(cls, engine, network=None, **kw) -> "GraphView":
        return cls(graph=engine_graph(engine, network), **kw)

    @classmethod
    def from_network(cls, network, **kw) -> "GraphView":
        return cls(graph=network_graph(network), **kw)

    @property
    def layer_count(self) -> int:
        return sum(1 for n in self.graph.get("nodes", []) if n.get("layer") is not None)


def shape_label(spec: dict) -> str:
    """'1x64x56x56' (plus the dtype when it is not float32), as drawn on an edge."""
    shape = spec.get("shape")
    text = "?" if shape is None else "x".join(str(d) for d in shape) or "scalar"
    dtype = spec.get("dtype")
    return text if dtype in (None, "float32") else f"{text} {dtype}"


def _tail(name: str, n: int = 28) -> str:
    tail = name.rstrip("/").rsplit("/", 1)[-1] or name
    return tail if len(tail) <= n else "…" + tail[-(n - 1):]


def _io_nodes(specs, kind: str, producer: dict, nodes: list) -> dict:
    ids = {}
    for i, spec in enumerate(specs):
        nid = f"{kind}{i}"
        ids[spec["name"]] = nid
        nodes.append({"id": nid, "layer": None, "label": kind + "put", "sub": _tail(spec["name"]),
                      "type": kind + "put", "tooltip": f"{kind}put {spec['name']}: {shape_label(spec)}",
                      "search": spec["name"].lower()})
        if kind == "in":
            producer[spec["name"]] = nid
    return ids


def _internal_edges(network, onnx_nodes: list[str], ids: dict[str, str]) -> list[list[str]]:
    """Edges between the ONNX nodes that one fused layer covers, read off the original model."""
    if network is None:
        return []
    members = set(onnx_nodes)
    made_by, edges = {}, []
    for node in network.graph.all_nodes():
        if node.name in members:
            for out in node.outputs:
                made_by[out.name] = node.name
    for node in network.graph.all_nodes():
        if node.name in members:
            for v in node.inputs:
                if v is not None and v.name in made_by and made_by[v.name] != node.name:
                    edges.append([ids[made_by[v.name]], ids[node.name]])
    return edges


def engine_graph(engine, network=None) -> dict:
    """Graph data of an engine: one node per layer (a group when it fuses several ONNX nodes),
    edges labelled with tensor shapes, input and output nodes. ``network`` (the source model)
    adds the edges inside fused groups."""
    d = engine.describe()
    nodes: list[dict] = []
    producer: dict[str, str] = {}
    _io_nodes(d["inputs"], "in", producer, nodes)
    edges, seen = [], set()
    for i, layer in enumerate(d["layers"]):
        nid = f"L{i}"
        node = {"id": nid, "layer": layer["name"], "label": layer.get("op") or layer["type"], "sub": _tail(layer["name"]),
                "type": layer["type"], "precision": layer["precision"],
                "search": " ".join([layer["name"], layer["type"], *layer["onnx_nodes"]]).lower(),
                "tooltip": (f"{layer['name']}\n{layer['type']} · {layer['precision']} · {layer['tactic']}\n"
                            f"ONNX: {', '.join(layer['onnx_nodes'][:12])}"
                            + (" …" if len(layer["onnx_nodes"]) > 12 else ""))}
        if len(layer["onnx_nodes"]) > 1:
            ids = {n: f"{nid}c{j}" for j, n in enumerate(layer["onnx_nodes"])}
            ops = layer["onnx_ops"] if len(layer["onnx_ops"]) == len(layer["onnx_nodes"]) else [""] * len(ids)
            node["children"] = [{"id": ids[n], "name": n, "label": op or _tail(n)}
                                for n, op in zip(layer["onnx_nodes"], ops)]
            node["child_edges"] = _internal_edges(network, layer["onnx_nodes"], ids)
        nodes.append(node)
        for spec in layer["inputs"]:
            src = producer.get(spec.get("name") or "")
            if src is not None and (src, nid, spec["name"]) not in seen:
                seen.add((src, nid, spec["name"]))
                edges.append({"source": src, "target": nid, "label": shape_label(spec)})
        for spec in layer["outputs"]:
            if spec.get("name"):
                producer[spec["name"]] = nid
    for i, spec in enumerate(d["outputs"]):
        nid = f"out{i}"
        nodes.append({"id": nid, "layer": None, "label": "output", "sub": _tail(spec["name"]), "type": "output",
                      "tooltip": f"output {spec['name']}: {shape_label(spec)}", "search": spec["name"].lower()})
        if spec["name"] in producer:
            edges.append({"source": producer[spec["name"]], "target": nid, "label": shape_label(spec)})
    return {"kind": "engine", "nodes": nodes, "edges": edges}


def network_graph(network) -> dict:
    """Graph data of a loaded model before optimization: one box per ONNX node (no groups)."""
    nodes: list[dict] = []
    producer: dict[str, str] = {}
    _io_nodes([s.to_dict() for s in network.inputs], "in", producer, nodes)
    edges = []
    for i, node in enumerate(network.graph):
        nid = f"L{i}"
        nodes.append({"id": nid, "layer": node.name, "label": node.op_type, "sub": _tail(node.name),
                      "type": node.op_type, "precision": "", "tooltip": f"{node.name}\n{node.op_type}",
                      "search": f"{node.name} {node.op_type}".lower()})
        for v in node.inputs:
            if v is not None and v.name in producer:
                edges.append({"source": producer[v.name], "target": nid, "label": shape_label(network.spec(v).to_dict())})
        for v in node.outputs:
            producer[v.name] = nid
    for i, spec in enumerate(s.to_dict() for s in network.outputs):
        nid = f"out{i}"
        nodes.append({"id": nid, "layer": None, "label": "output", "sub": _tail(spec["name"]), "type": "output",
                      "tooltip": f"output {spec['name']}", "search": spec["name"].lower()})
        if spec["name"] in producer:
            edges.append({"source": producer[spec["name"]], "target": nid, "label": shape_label(spec)})
    return {"kind": "network", "nodes": nodes, "edges": edges}
