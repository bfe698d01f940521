"""The graph view's ES module (workbench/static/graph.js) on a bare page, without Jupyter: a stub
anywidget model holds the state, the bundle renders into one div. Used by the browser tests and by
bench/graph_layout.py."""

from __future__ import annotations

import json
import os

from tests.support.paths import REPO

BUNDLE = os.path.join(REPO, "workbench", "static", "graph.js")
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


def show(browser, graph: dict, timeout_ms: int = 60_000):
    """A new Playwright page with `graph` drawn; fails unless the view reached its ready state
    without a page error."""
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


def layout_ms(page) -> float:
    """The layout time the view measured itself (data-layout-ms)."""
    return float(page.get_attribute(".wb-graph", "data-layout-ms"))


def box_count(page) -> int:
    return page.locator("g.wb-layer").count() + page.locator("g.wb-onnx").count()


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
