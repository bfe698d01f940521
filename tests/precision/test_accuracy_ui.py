"""The notebook's Precision tab driven from Python the way a person drives it: per-layer error bars
next to the precision dropdowns, re-measured when a precision changes, and "auto under budget"
with its latency-vs-error chart."""

from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")
pytest.importorskip("matplotlib")

import workbench as wb  # noqa: E402
from tests.precision import accuracy_models as M  # noqa: E402
from workbench.ui import Workbench  # noqa: E402
from workbench.ui.precision_tab import error_bar, tradeoff_figure  # noqa: E402


@pytest.fixture()
def app():
    a = Workbench(wb.load_onnx(M.mlp()), device="cpu", feeds=M.feeds(1)[0])
    a.optimize_tab.build_button.click()
    assert a.optimize_tab.error.value == "" and a.engine is not None
    return a


def test_bars_next_to_the_dropdowns_and_remeasure_on_change(app):
    tab = app.precision_tab
    names = [l.name for l in app.engine.layers]
    assert set(tab.dropdowns) == set(names) and all("–" in tab.bars[n].value for n in names)  # not measured yet
    tab.measure_button.click()
    assert tab.report is not None and tab.measured == app.label
    assert "error vs an fp32 reference of engine" in tab.accuracy.value
    fp32 = tab.layer_errors()
    assert set(fp32) == set(names) and all(e < 1e-5 for e in fp32.values())
    assert all("e-" in tab.bars[n].value or ">0<" in tab.bars[n].value for n in names)
    # a dropdown changed: a preview with that layer in fp16 is measured; the session's engine stays
    engines = dict(app.engines)
    tab.dropdowns[names[1]].value = "fp16"
    assert tab.measured == "preview" and app.engines == engines
    row = tab.report.layer(names[1])
    assert row["precision"] == "fp16" and row["output_err"] > 100 * fp32[names[1]]
    assert tab.layer_errors()[names[1]] == row["output_err"]
    # the graph view's "error vs fp32" colouring reads the same numbers
    graph = app.optimize_tab.graph
    assert graph.errors == pytest.approx(tab.layer_errors())
    graph.color_by = "error"
    assert "preview build" in tab.accuracy.value
    # Rebuild keeps it and measures the new engine
    tab.rebuild_button.click()
    assert "Error" not in tab.result.value and tab.measured == app.label
    assert {l.name: l.precision for l in app.engine.layers}[names[1]] == "fp16"


def test_measure_on_a_model_whose_impact_runs_are_too_long_ranks_by_the_added_error(app, monkeypatch):
    import workbench.ui.precision_tab as pt

    monkeypatch.setattr(pt, "IMPACT_SECONDS", 1e-12)
    tab = app.precision_tab
    tab.measure_button.click()
    assert tab.report.sort_column == "added_err" and tab.report.engine["impact"].startswith("skipped")
    assert "ranked by the error they add at their own output" in tab.accuracy.value
    assert tab.layer_errors() == {r["layer"]: r["added_err"] for r in tab.report.layers}


def test_auto_under_budget_shows_the_tradeoff(app, capsys):
    tab = app.precision_tab
    tab.budget.value = 1e-3
    tab.auto_button.click()
    assert "Error" not in tab.auto_result.value, tab.auto_result.value
    # the search's steps were shown as they ran (outside a kernel tqdm writes to stderr)
    assert "precision search" in capsys.readouterr().err
    rep = app.engine.reports["mixed_precision"]
    assert tab.last_auto is rep and len(app.engines) == 2 and "best" in app.label
    assert "<img" in tab.auto_result.value and "Candidates tried" in tab.auto_result.value
    assert rep["error"]["held_out"] <= 1e-3
    # the dropdowns now show what the search chose
    assert {n: d.value for n, d in tab.dropdowns.items()} == rep["precisions"]
    fig = tradeoff_figure(rep)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and len(ax.collections) >= 2


def test_error_bar_html_is_escaped_and_scaled():
    assert "inf" in error_bar(float("inf")) and "–" in error_bar(None) and "–" in error_bar(float("nan"))
    small, big = error_bar(1e-7), error_bar(1e-2)
    width = lambda html: int(html.split("width:")[2].split("px")[0])  # noqa: E731 - the inner bar's width
    assert width(small) < width(big)
    assert "<script>" not in error_bar(1e-3, "<script>alert(1)</script>")


def test_a_layer_the_build_inserted_has_no_dropdown_to_change(app):
    """A layer without ONNX nodes (the GPU's output casts) is not steerable: its dropdown is disabled
    and says which layer to steer; the others stay enabled."""
    tab = app.precision_tab
    layer = app.engine.layers[-1]
    nodes, layer.onnx_nodes = layer.onnx_nodes, []
    try:
        tab.refresh()
        dd = tab.dropdowns[layer.name]
        assert dd.disabled and "layer that feeds it" in dd.tooltip
        assert not any(d.disabled for n, d in tab.dropdowns.items() if n != layer.name)
    finally:
        layer.onnx_nodes = nodes
