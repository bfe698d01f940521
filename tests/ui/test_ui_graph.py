"""Graph data for the graph view, and the rule that model strings are rendered escaped."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")

import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import workbench as wb  # noqa: E402
from tests.support.paths import MODELS  # noqa: E402
from workbench.ui import GraphView, Workbench, engine_graph, network_graph  # noqa: E402

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def evil_model(path) -> str:
    """A model whose node names, value names and doc strings are HTML."""
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), name=f"w{EVIL}")
    nodes = [
        helper.make_node("MatMul", ["x", w.name], [f"h{EVIL}"], name=f"mm{EVIL}", doc_string=EVIL),
        helper.make_node("Relu", [f"h{EVIL}"], ["y"], name=f"relu{EVIL}"),
    ]
    graph = helper.make_graph(nodes, f"g{EVIL}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [w], doc_string=EVIL)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name=EVIL)
    model.ir_version = 8
    onnx.save(model, path)
    return path


def all_html(widget) -> list[str]:
    """Every HTML string in a widget tree."""
    import ipywidgets as W

    out = []
    if isinstance(widget, (W.HTML, W.HTMLMath)):
        out.append(widget.value)
    for child in getattr(widget, "children", ()):
        out.extend(all_html(child))
    return out


def test_model_strings_are_escaped_everywhere(tmp_path):
    app = Workbench(evil_model(str(tmp_path / "evil.onnx")), device="cpu")
    app.optimize_tab.build_button.click()
    assert app.optimize_tab.error.value == ""
    layer = app.engine.layers[0].name
    app.optimize_tab.graph.selected = layer
    app.profile_tab.runs.value = 1
    app.profile_tab.run_button.click()
    app.export_tab.filename.value = str(tmp_path / "evil.wbe")
    app.export_tab.button.click()
    html = "\n".join(all_html(app.widget))
    assert "&lt;script&gt;" in html  # the names are shown ...
    assert "<script>" not in html and "<img" not in html  # ... but never as markup
    # the graph view gets the names as plain data (rendered by textContent in the browser), ids are ours
    g = app.optimize_tab.graph.graph
    assert all(n["id"].replace("L", "").replace("in", "").replace("out", "").replace("c", "").isdigit()
               for n in g["nodes"])


def test_engine_graph_groups_fused_layers_with_their_onnx_nodes():
    net = wb.load_onnx(os.path.join(MODELS, "resnet_bn_legacy.onnx"))
    engine = wb.build(net, wb.BuilderConfig(device="cpu", shapes={"pixel_values": (2, 3, 64, 64)}))
    g = engine_graph(engine, net)
    layers = [n for n in g["nodes"] if n["layer"] is not None]
    assert [n["layer"] for n in layers] == [l.name for l in engine.layers]
    fused = [l for l in engine.layers if len(l.onnx_nodes) > 1]
    groups = [n for n in layers if n.get("children")]
    assert len(groups) == len(fused)
    for n in groups:
        layer = engine.plan.layer(n["layer"])
        assert [c["name"] for c in n["children"]] == layer.onnx_nodes
        assert len(n["child_edges"]) >= 1  # a fused chain is connected inside its group
    ids = {n["id"] for n in g["nodes"]}
    assert all(e["source"] in ids and e["target"] in ids for e in g["edges"])
    assert any("x" in e["label"] for e in g["edges"])  # shapes on edges, e.g. 2x16x32x32
    assert {n["id"] for n in g["nodes"] if n["layer"] is None} == {"in0", "out0"}


def test_network_graph_has_every_onnx_node():
    net = wb.load_onnx(os.path.join(MODELS, "mobilenetv2_legacy.onnx"))
    g = network_graph(net)
    assert sum(1 for n in g["nodes"] if n["layer"] is not None) == net.summary()["nodes"] > 1000


def test_graph_view_traits():
    v = GraphView()
    v.color_by = "time"
    import traitlets

    with pytest.raises(traitlets.TraitError):
        v.color_by = "rainbow"
    assert v.layer_count == 0
    from workbench.ui.graph import _ESM

    assert _ESM.exists() and _ESM.stat().st_size > 100_000  # the committed bundle (elkjs inside)
