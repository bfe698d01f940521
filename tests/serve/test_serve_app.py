"""The Export tab's Serve and Stop buttons, clicked the way a person clicks them: a local deployment
of the exported engine, its URL and curl examples on the page, requests answered, then stopped."""

from __future__ import annotations

import html
import re

import numpy as np
import pytest

from tests.serve import engines as E
from tests.serve.conftest import free_port

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")
pytest.importorskip("matplotlib")


@pytest.mark.slow
@pytest.mark.allow_pickle
def test_serve_and_stop_buttons(ray_instance, tmp_path):
    import requests
    from ray import serve

    from workbench.serve import protocol as P
    from workbench.ui import Workbench

    model = tmp_path / "tinydense.onnx"
    model.write_bytes(E.dense_model())
    app = Workbench(str(model), device="cpu", shapes={"x": (4, E.WIDTH), "s": (4, 1)}, build=True)
    tab = app.export_tab
    assert not tab.serve_button.disabled and tab.stop_button.disabled
    tab.filename.value = str(tmp_path / "out" / "tinydense.wbe")
    tab.port.value = free_port()
    tab.serve_button.click()  # exports first, then serves
    assert tab.info is not None and tab.server is not None, tab.serve_result.value
    page = html.unescape(tab.serve_result.value)
    url = f"http://127.0.0.1:{tab.port.value}/v2/models/tinydense"
    assert url in page and f"curl {url}" in page and "curl -X POST" in page
    assert tab.serve_button.disabled and not tab.stop_button.disabled
    # the curl example's body is a valid request for this model
    body = re.search(r"-d '(\{.*\})'", page).group(1)
    r = requests.post(url + "/infer", data=body, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 200 and [o["name"] for o in r.json()["outputs"]] == ["y", "z"]
    feeds = E.dense_feeds(np.random.default_rng(0), 3)
    payload, headers = P.request_body(feeds)
    got = P.decode_response(requests.post(url + "/infer", data=payload, headers=headers, timeout=60).content, None)
    want = E.row_by_row(app.engine.create_context(threads=1), feeds, 4)
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-6, atol=1e-6)
    tab.serve_button.click()  # a second click while serving changes nothing
    assert tab.server is not None
    tab.stop_button.click()
    assert tab.server is None and "stopped serving tinydense" in tab.serve_result.value
    assert not tab.serve_button.disabled and tab.stop_button.disabled
    assert "tinydense" not in serve.status().applications
