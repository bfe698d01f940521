"""Layout time of the notebook's graph view (workbench/static/graph.js) in headless Chromium, without
Jupyter: the MobileNetV2 ONNX graph (1,000+ nodes), its CPU engine graph, and a synthetic graph of
1,400+ boxes. The view measures its own layout (data-layout-ms); the budget is 3 s per graph.

    python3 bench/graph_layout.py [--repeat 3]

Needs Debian's Chromium at /usr/bin/chromium and the playwright package (the browser tests' setup).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import workbench as wb  # noqa: E402
from tests.support.browser_support import CHROMIUM, launch_args  # noqa: E402
from tests.support.graph_page import box_count, layout_ms, show, synthetic_graph  # noqa: E402
from tests.support.paths import MODELS  # noqa: E402
from workbench.ui import engine_graph, network_graph  # noqa: E402

BUDGET_MS = 3000.0


def graphs() -> dict:
    net = wb.load_onnx(os.path.join(MODELS, "mobilenetv2_legacy.onnx"))
    engine = wb.build(net, wb.BuilderConfig(device="cpu", shapes={"pixel_values": (2, 3, 64, 64)}))
    return {"MobileNetV2 ONNX graph": network_graph(net),
            "MobileNetV2 CPU engine graph": engine_graph(engine, net),
            "synthetic, 700 layers": synthetic_graph(700)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="page loads per graph (median reported)")
    args = ap.parse_args(argv)
    if not os.path.exists(CHROMIUM):
        print(f"needs Chromium at {CHROMIUM}", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(**launch_args())
        for name, graph in graphs().items():
            times, boxes = [], 0
            for _ in range(args.repeat):
                page = show(browser, graph)
                times.append(layout_ms(page))
                boxes = box_count(page)
                page.close()
            rows.append((name, len(graph["nodes"]), boxes, statistics.median(times), max(times)))
        browser.close()
    print(f"| graph | nodes | boxes | median layout ms | max layout ms | within {BUDGET_MS:.0f} ms |")
    print("|---|---:|---:|---:|---:|---|")
    for name, nodes, boxes, med, worst in rows:
        print(f"| {name} | {nodes} | {boxes} | {med:.0f} | {worst:.0f} | {'yes' if worst < BUDGET_MS else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
