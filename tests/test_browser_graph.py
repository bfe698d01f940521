"""The graph view's ES module in headless Chromium, without Jupyter: layout time at 1,000+ nodes,
layer boxes, click -> `selected`, and model strings drawn as text."""

from __future__ import annotations

import json
import os

import pytest

from .browser_support import launch_args, require_browser, screenshot

pytestmark = pytest.mark.browser

MODELS = os.path.join(os.path.dirname(__file__), "models")
BUNDLE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "workbench", "static", "graph.js")
PAGE = """<!doctype html><html><body style="margin:0"><div id="host" style="width:1200px"></div>
<script type="module">
import widget from "/graph.js";
const state = JSON.parse(document.getElementById("data").textContent);
const handlers = {};
const model = {
  get: (k) => state[k],
  set: (k, v) => { state[k] = v; },
  save_changes: () => { window.__saved = (window.__saved || 0) + 1; },
  on: (ev, fn) => { (handlers[ev] = handlers[ev] || []).push(fn); },
  off: () => {},
};
window.__state = state;
widget.render({ model, el: document.getElementById("host") });
</script><script type="application/json" id="data">DATA</script></body></html>"""


@pytest.fixture(scope="module")
def browser():
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(**launch_args())
        yield b
        b.close()


def show(browser, graph: dict, timeout_ms: int = 60_000):
    page = browser.new_page(viewport={"width": 1240, "height": 800})
    state = {"graph": graph, "color_by": "op", "timing": {}, "selected": "", "search": "", "height": 700,
             "layout_ms": -1}
    html = PAGE.replace("DATA", json.dumps(state).replace("</", "<\\/"))
    page.route("http://wb.test/", lambda r: r.fulfill(body=html, content_type="text/html"))
    page.route("http://wb.test/graph.js", lambda r: r.fulfill(path=BUNDLE, content_type="text/javascript"))
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto("http://wb.test/")
    page.wait_for_selector(".wb-graph[data-state=ready], .wb-graph[data-state=error]", timeout=timeout_ms)
    assert page.get_attribute(".wb-graph", "data-state") == "ready", page.text_content(".wb-status")
    assert not errors, errors
    return page


def synthetic_graph(n_layers: int = 700, group_size: int = 3) -> dict:
    """A ResNet-like chain with skip connections where every other layer is a fused group:
    about n_layers * 2 boxes in all (layers + ONNX nodes inside groups)."""
    nodes = [{"id": "in0", "layer": None, "label": "input", "sub": "x", "type": "input"}]
    edges, prev = [], "in0"
    for i in range(n_layers):
        node = {"id": f"L{i}", "layer": f"layer_{i}", "label": "Conv" if i % 2 else "FusedConvBnRelu",
                "sub": f"block{i // 3}/conv{i}", "type": "Conv" if i % 2 else "FusedConvBnRelu",
                "precision": "fp16" if i % 3 else "fp32", "search": f"layer_{i}"}
        if i % 2 == 0:
            node["children"] = [{"id": f"L{i}c{j}", "name": f"n{i}_{j}", "label": op}
                                for j, op in enumerate(["Conv", "BatchNormalization", "Relu"][:group_size])]
            node["child_edges"] = [[f"L{i}c{j}", f"L{i}c{j + 1}"] for j in range(group_size - 1)]
        nodes.append(node)
        edges.append({"source": prev, "target": f"L{i}", "label": "1x64x56x56"})
        if i >= 3 and i % 3 == 0:
            edges.append({"source": f"L{i - 3}", "target": f"L{i}", "label": "1x64x56x56"})
        prev = f"L{i}"
    nodes.append({"id": "out0", "layer": None, "label": "output", "sub": "y", "type": "output"})
    edges.append({"source": prev, "target": "out0", "label": "1x1000"})
    return {"nodes": nodes, "edges": edges}


def test_mobilenetv2_onnx_graph_lays_out_in_under_3s(browser):
    import workbench as wb
    from workbench.ui import network_graph

    net = wb.load_onnx(os.path.join(MODELS, "mobilenetv2_legacy.onnx"))
    graph = network_graph(net)
    n = sum(1 for x in graph["nodes"] if x["layer"] is not None)
    assert n >= 1000
    page = show(browser, graph)
    ms = float(page.get_attribute(".wb-graph", "data-layout-ms"))
    assert page.locator("g.wb-layer").count() == n
    screenshot(page, "graph_mobilenetv2_onnx.png")
    print(f"MobileNetV2 ONNX graph: {n} nodes laid out in {ms:.0f} ms")
    assert ms < 3000, f"layout of {n} nodes took {ms:.0f} ms"


def test_mobilenetv2_engine_graph_and_synthetic_1400_boxes(browser):
    import workbench as wb
    from workbench.ui import engine_graph

    net = wb.load_onnx(os.path.join(MODELS, "mobilenetv2_legacy.onnx"))
    engine = wb.build(net, wb.BuilderConfig(device="cpu", shapes={"pixel_values": (2, 3, 64, 64)}))
    page = show(browser, engine_graph(engine, net))
    assert page.locator("g.wb-layer").count() == len(engine.layers)
    assert float(page.get_attribute(".wb-graph", "data-layout-ms")) < 3000
    page.close()
    page = show(browser, synthetic_graph(700))
    boxes = page.locator("g.wb-layer").count() + page.locator("g.wb-onnx").count()
    ms = float(page.get_attribute(".wb-graph", "data-layout-ms"))
    print(f"synthetic graph: {boxes} boxes laid out in {ms:.0f} ms")
    assert boxes >= 1400 and ms < 3000


def test_click_search_and_escaping(browser):
    evil = '<img src=x onerror="window.__pwned=1">'
    graph = {"nodes": [{"id": "in0", "layer": None, "label": "input", "sub": evil, "type": "input"},
                       {"id": "L0", "layer": evil, "label": evil, "sub": evil, "type": evil, "precision": "fp32",
                        "search": evil.lower(), "tooltip": evil,
                        "children": [{"id": "L0c0", "name": evil, "label": "MatMul"},
                                     {"id": "L0c1", "name": "relu", "label": "Relu"}],
                        "child_edges": [["L0c0", "L0c1"]]},
                       {"id": "L1", "layer": "second", "label": "Relu", "sub": "second", "type": "Relu",
                        "precision": "fp16", "search": "second"}],
             "edges": [{"source": "in0", "target": "L0", "label": evil}, {"source": "L0", "target": "L1", "label": "2x4"}]}
    page = show(browser, graph)
    page.locator("g.wb-layer[data-layer=second] > rect").click()
    assert page.evaluate("window.__state.selected") == "second"
    page.fill("input.wb-search", "second")
    page.press("input.wb-search", "Enter")
    assert page.locator("g.wb-layer.wb-match").count() == 1
    page.select_option("select.wb-color-by", "precision")
    assert page.evaluate("window.__state.color_by") == "precision"
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img").count() == 0
    assert evil[:20] in page.locator(".wb-graph").inner_text() or page.locator("text.wb-edge-label").count() == 1
