"""The explorer in a real JupyterLab (127.0.0.1, token) driven by Playwright in Debian's Chromium: a
notebook builds an fp32 and an fp16 engine of a small model on the CPU, profiles one and compares
them; the Profile tab shows the timeline, the latency-by-type-and-precision chart and the memory
view, and the Compare tab shows the per-layer A vs B table. Screenshots go to test-artifacts/."""

from __future__ import annotations

import os

import pytest

from tests.support.browser_support import JupyterLab, launch_args, require_browser, screenshot
from tests.support.paths import MODELS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MODEL = os.path.join(MODELS, "resnet_legacy.onnx")
CELLS = [
    "from workbench.ui import Workbench\n"
    f"app = Workbench({MODEL!r}, device='cpu', shapes={{'pixel_values': (2, 3, 64, 64)}})\n"
    "fp32 = app.build(precision='fp32')\n"
    "fp16 = app.build(precision='fp16', disable=['conv_epilogue'])\n"
    "app.profile_tab.runs.value = 2\n"
    "app.profile_tab.run()\n"
    "a, b = list(app.engines)\n"
    "result = app.compare(a, b, runs=1)\n"
    "n_groups = len(result['layers'])\n"
    "app.tabs.selected_index = 3\n"
    "app",
    "print(f'GROUPS={n_groups}')",
]


@pytest.fixture()
def lab(tmp_path):
    require_browser()
    pytest.importorskip("jupyterlab")
    nbformat = pytest.importorskip("nbformat")
    server = JupyterLab(tmp_path)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, server.root / "explorer.ipynb")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_profile_and_compare_tabs_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(**launch_args())
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{lab.url}/lab/tree/explorer.ipynb?reset&token={lab.token}")
            page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=120_000)
            page.locator("#jp-MainMenu").get_by_text("Run", exact=True).click()
            page.locator("li.lm-Menu-item[data-command=\"runmenu:run-all\"]").click()
            page.wait_for_function("/GROUPS=\\d+/.test(document.body.innerText)", timeout=300_000)
            n_groups = int(page.evaluate("document.body.innerText.match(/GROUPS=(\\d+)/)[1]"))
            app = page.locator(".widget-tab").first
            # Profile tab (selected by the notebook): the new charts, each an image
            for name in ("timeline", "breakdown", "memory"):
                chart = app.locator(f".wb-chart-{name} img")
                chart.wait_for(timeout=60_000)
                assert chart.evaluate("img => img.naturalWidth") > 100, name
            assert "Latency by op type and precision" in app.inner_text()
            assert "What holds the peak" in app.inner_text()
            app.locator(".wb-chart-timeline").scroll_into_view_if_needed()
            screenshot(page, "explorer_profile_tab.png", app)
            # Compare tab: per layer A vs B, one row per matched layer group
            app.locator(".lm-TabBar-tab", has_text="Compare").click()
            table = app.locator(".wb-compare-layers table")
            table.wait_for(timeout=60_000)
            header = table.locator("thead").inner_text()
            for col in ("precision_a", "precision_b", "tactic_a", "tactic_b", "ms_a", "ms_b", "rel_err"):
                assert col in header, col
            rows = table.locator("tbody tr")
            assert rows.count() == n_groups > 0
            text = table.locator("tbody").inner_text()
            assert "fp32" in text and "fp16" in text
            assert "Conv+Pointwise" in text or "FusedConv" in text  # groups matched across fusions
            screenshot(page, "explorer_compare_tab.png", app)
        finally:
            browser.close()
