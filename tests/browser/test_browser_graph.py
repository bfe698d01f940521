"""The graph view's ES module in headless Chromium, without Jupyter: 1,000+ nodes drawn, layer boxes,
click -> `selected`, and model strings drawn as text. Layout times: bench/graph_layout.py."""

from __future__ import annotations

import math
import os

import pytest

from tests.support.browser_support import launch_args, require_browser, screenshot
from tests.support.graph_page import box_count, layout_ms, show, synthetic_graph
from tests.support.paths import MODELS

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(**launch_args())
        yield b
        b.close()


def test_mobilenetv2_onnx_graph_draws_every_node(browser):
    import workbench as wb
    from workbench.ui import network_graph

    net = wb.load_onnx(os.path.join(MODELS, "mobilenetv2_legacy.onnx"))
    graph = network_graph(net)
    n = sum(1 for x in graph["nodes"] if x["layer"] is not None)
    assert n >= 1000
    page = show(browser, graph)
    assert page.locator("g.wb-layer").count() == n
    assert math.isfinite(layout_ms(page))  # the view reports its layout time (bench/graph_layout.py prints it)
    screenshot(page, "graph_mobilenetv2_onnx.png")


def test_mobilenetv2_engine_graph_and_synthetic_1400_boxes(browser):
    import workbench as wb
    from workbench.ui import engine_graph

    net = wb.load_onnx(os.path.join(MODELS, "mobilenetv2_legacy.onnx"))
    engine = wb.build(net, wb.BuilderConfig(device="cpu", shapes={"pixel_values": (2, 3, 64, 64)}))
    page = show(browser, engine_graph(engine, net))
    assert page.locator("g.wb-layer").count() == len(engine.layers)
    page.close()
    page = show(browser, synthetic_graph(700))
    assert box_count(page) >= 1400


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
