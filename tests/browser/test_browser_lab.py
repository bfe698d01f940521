"""quickstart.ipynb in a real JupyterLab (127.0.0.1, token) driven by Playwright in Debian's Chromium:
run all, the graph shows one box per engine layer, clicking a layer shows its details, Export writes
the engine. Screenshots go to test-artifacts/."""

from __future__ import annotations

import pytest

from tests.support.browser_support import JupyterLab, launch_args, require_browser, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture()
def lab(tmp_path):
    require_browser()
    pytest.importorskip("jupyterlab")
    server = JupyterLab(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


# index of the first layer box that lies inside the visible canvas (the graph is fitted
# to its width, so most of a tall model is below the fold)
VISIBLE_LAYER = """(el) => {
  const c = el.querySelector('.wb-canvas').getBoundingClientRect();
  const boxes = [...el.querySelectorAll('g.wb-layer')];
  return boxes.findIndex((g) => {
    const r = g.querySelector('rect').getBoundingClientRect();
    return r.width > 4 && r.top > c.top + 20 && r.bottom < c.bottom - 20 && r.left > c.left && r.right < c.right;
  });
}"""


def expected_layers() -> int:
    import workbench as wb
    from workbench.demo import embedded_model_path

    return len(wb.build(wb.load_onnx(embedded_model_path()), wb.BuilderConfig(device="auto")).layers)


def test_quickstart_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    assert lab.unauthenticated_status() in (401, 403)  # the server wants its token
    n_layers = expected_layers()
    with sync_playwright() as p:
        browser = p.chromium.launch(**launch_args())
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{lab.url}/lab/tree/quickstart.ipynb?reset&token={lab.token}")
            page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=120_000)
            page.locator("#jp-MainMenu").get_by_text("Run", exact=True).click()
            page.locator("li.lm-Menu-item[data-command=\"runmenu:run-all\"]").click()
            graph = page.locator(".wb-graph").first
            graph.wait_for(timeout=300_000)
            page.wait_for_selector(".wb-graph[data-state=ready]", timeout=120_000)
            assert graph.locator("g.wb-layer").count() == n_layers
            assert graph.get_attribute("data-layers") == str(n_layers)
            graph.scroll_into_view_if_needed()
            screenshot(page, "lab_quickstart_graph.png")
            # click a layer box: the Python side gets `selected` and shows the layer's details
            index = graph.evaluate(VISIBLE_LAYER)
            assert index >= 0, "no layer box inside the graph's canvas"
            name = graph.locator("g.wb-layer").nth(index).get_attribute("data-layer")
            graph.locator("g.wb-layer > rect").nth(index).click(position={"x": 12, "y": 8})  # header: a group's middle holds its ONNX nodes
            details = page.locator(".widget-html", has_text="Original ONNX nodes").first
            details.wait_for(timeout=30_000)
            assert name in details.inner_text()
            details.scroll_into_view_if_needed()
            screenshot(page, "lab_quickstart_details.png")
            # wait for the last cell (%wb_profile) so the kernel is free for the Export click
            page.wait_for_function("document.querySelectorAll('.wb-graph').length >= 2", timeout=300_000)
            page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=300_000)
            app = page.locator(".widget-tab").first
            app.locator(".lm-TabBar-tab", has_text="Export").click()
            app.locator("button.jupyter-button:visible", has_text="Export").click()
            written = lab.root / "light_resnet50.wbe"  # the Export tab's default name for this model
            # (the notebook's own app.export() already put "Engine written" on the page: wait for the file)
            page.wait_for_function("document.body.innerText.includes('light_resnet50.wbe')", timeout=120_000)
            for _ in range(240):
                if written.exists() and written.stat().st_size > 0:
                    break
                page.wait_for_timeout(500)
            assert written.exists() and written.stat().st_size > 0
            screenshot(page, "lab_quickstart_export.png", app)
            import workbench as wb

            assert len(wb.Engine.load(written).layers) == n_layers
        finally:
            browser.close()
