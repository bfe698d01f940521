// The workbench graph view: an anywidget ES module. Python sends the graph as data (the `graph`
// trait); this module lays it out with elkjs, draws it as SVG, and reports clicks back through the
// `selected` trait. Traits: graph, color_by ("precision" | "op" | "time" | "error"), timing ({layer: pct}),
// errors ({layer: relative error vs fp32}),
// selected (layer name), search, height, layout_ms (written here, read by Python and tests).
import ELK from "elkjs/lib/elk.bundled.js";
import { colorFor, legendFor } from "./colors.js";
import { layoutGraph } from "./layout.js";
import { CSS, htmlEl, svgEl, svgText, truncate } from "./svg.js";
import { Viewport } from "./viewport.js";

const elk = new ELK(); // no worker: elk.bundled.js runs the layout on this thread

function drawGraph(root, data, lay) {
  const byLayer = new Map(); // layer name -> <g>
  const defs = svgEl("defs", {}, root);
  const marker = svgEl("marker", { id: "wb-arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" }, defs);
  svgEl("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#777" }, marker);
  const nodeLayer = svgEl("g", {}, root);
  const edgeLayer = svgEl("g", {}, root); // edges above group fills, below nothing clickable
  const items = [];
  for (const n of data.nodes) {
    const b = lay.boxes.get(n.id);
    if (!b) continue;
    const group = n.children && n.children.length > 0;
    const cls = n.layer === null ? "wb-io" : `wb-layer${group ? " wb-group" : ""}`;
    const g = svgEl("g", { class: cls }, nodeLayer);
    if (n.layer !== null) { g.setAttribute("data-layer", n.layer); byLayer.set(n.layer, g); }
    const rect = svgEl("rect", { x: b.x, y: b.y, width: b.width, height: b.height, rx: 4 }, g);
    const tip = svgEl("title", {}, g);
    tip.textContent = n.tooltip || n.label;
    if (group) {
      svgText(g, b.x + 6, b.y + 15, truncate(`${n.label}  ${n.sub || ""}`, Math.floor(b.width / 6.2)), "wb-type");
      for (const c of n.children) {
        const cb = lay.boxes.get(c.id);
        if (!cb) continue;
        const cg = svgEl("g", { class: "wb-onnx", "data-onnx": c.name }, g);
        svgEl("rect", { x: cb.x, y: cb.y, width: cb.width, height: cb.height, rx: 3 }, cg);
        svgText(cg, cb.x + 6, cb.y + 16, truncate(c.label, Math.floor(cb.width / 6.2)), "wb-sub");
        const ct = svgEl("title", {}, cg);
        ct.textContent = c.name;
      }
    } else {
      svgText(g, b.x + 6, b.y + 15, truncate(n.label, Math.floor(b.width / 6.6)), "wb-type");
      if (n.sub) svgText(g, b.x + 6, b.y + 28, truncate(n.sub, Math.floor(b.width / 5.2)), "wb-sub");
    }
    items.push({ node: n, rect });
  }
  for (const e of lay.childEdges) {
    svgEl("path", { class: "wb-child-edge", d: pathOf(e.points) }, edgeLayer);
  }
  for (const e of lay.edges) {
    if (e.points.length < 2) continue;
    svgEl("path", { class: "wb-edge", d: pathOf(e.points) }, edgeLayer);
    if (e.label) {
      const [x, y] = midpoint(e.points);
      svgText(edgeLayer, x + 3, y - 2, e.label, "wb-edge-label");
    }
  }
  return { byLayer, items };
}

function pathOf(points) {
  return points.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
}

function midpoint(points) {
  const i = Math.floor((points.length - 1) / 2);
  const [a, b] = [points[i], points[i + 1] || points[i]];
  return [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
}

function render({ model, el }) {
  const wrap = htmlEl("div", { class: "wb-graph" }, el);
  htmlEl("style", {}, wrap, CSS);
  const bar = htmlEl("div", { class: "wb-toolbar" }, wrap);
  const search = htmlEl("input", { type: "search", placeholder: "search layers / ONNX nodes (Enter: next)", size: 34, class: "wb-search" }, bar);
  const matchInfo = htmlEl("span", { class: "wb-matches" }, bar, "");
  htmlEl("span", {}, bar, "colour by");
  const colorSel = htmlEl("select", { class: "wb-color-by" }, bar);
  for (const [v, t] of [["precision", "precision"], ["op", "op type"], ["time", "share of time"], ["error", "error vs fp32"]]) {
    htmlEl("option", { value: v }, colorSel, t);
  }
  const fitBtn = htmlEl("button", { type: "button", title: "fit the whole graph" }, bar, "fit");
  const zoomIn = htmlEl("button", { type: "button" }, bar, "+");
  const zoomOut = htmlEl("button", { type: "button" }, bar, "−");
  const status = htmlEl("span", { class: "wb-status" }, bar, "laying out…");
  const legend = htmlEl("div", { class: "wb-legend" }, wrap);
  const canvas = htmlEl("div", { class: "wb-canvas" }, wrap);
  canvas.style.height = `${model.get("height") || 560}px`;
  const svg = svgEl("svg", { width: "100%", height: "100%" }, canvas);
  const root = svgEl("g", {}, svg);
  const view = new Viewport(svg, root, canvas);

  let drawn = null, matches = [], matchIdx = -1, generation = 0;

  function recolor() {
    if (!drawn) return;
    const mode = model.get("color_by") || "precision";
    const timing = model.get("timing") || {};
    const maxPct = Math.max(0, ...Object.values(timing).map(Number));
    const errors = model.get("errors") || {};
    for (const { node, rect } of drawn.items) {
      if (node.layer !== null) rect.setAttribute("fill", colorFor(node, mode, timing, maxPct, errors));
    }
    legend.replaceChildren();
    for (const [label, color] of legendFor(model.get("graph").nodes || [], mode, maxPct)) {
      const item = htmlEl("span", {}, legend);
      htmlEl("span", { class: "sw", style: `background:${color}` }, item);
      item.appendChild(document.createTextNode(label));
    }
    colorSel.value = mode;
  }

  function highlightSelected(center) {
    if (!drawn) return;
    for (const g of drawn.byLayer.values()) g.classList.remove("wb-selected");
    const g = drawn.byLayer.get(model.get("selected"));
    if (g) {
      g.classList.add("wb-selected");
      if (center) view.centerOn(g.querySelector("rect"));
    }
  }

  function applySearch(q) {
    q = (q || "").trim().toLowerCase();
    matches = [];
    matchIdx = -1;
    if (!drawn) return;
    for (const { node } of drawn.items) {
      const g = drawn.byLayer.get(node.layer);
      if (!g) continue;
      const hit = q !== "" && (node.search || "").includes(q);
      g.classList.toggle("wb-match", hit);
      if (hit) matches.push(node.layer);
    }
    matchInfo.textContent = q ? `${matches.length} match${matches.length === 1 ? "" : "es"}` : "";
  }

  async function relayout() {
    const gen = ++generation;
    const data = model.get("graph") || { nodes: [], edges: [] };
    root.replaceChildren();
    drawn = null;
    status.textContent = `laying out ${data.nodes.length} nodes…`;
    wrap.setAttribute("data-state", "layout");
    try {
      const lay = await layoutGraph(elk, data);
      if (gen !== generation) return; // a newer graph arrived while this one was laid out
      drawn = drawGraph(root, data, lay);
      const nLayers = drawn.byLayer.size;
      status.textContent = `${nLayers} layers · ${data.nodes.length - nLayers} I/O · layout ${Math.round(lay.ms)} ms`;
      wrap.setAttribute("data-layout-ms", lay.ms.toFixed(1));
      wrap.setAttribute("data-layers", String(nLayers));
      wrap.setAttribute("data-state", "ready");
      view.setContent(lay.width, lay.height);
      view.fit();
      recolor();
      applySearch(search.value);
      highlightSelected(false);
      model.set("layout_ms", lay.ms);
      model.save_changes();
    } catch (err) {
      status.textContent = `layout failed: ${err && err.message ? err.message : err}`;
      wrap.setAttribute("data-state", "error");
    }
  }

  svg.addEventListener("click", (ev) => {
    if (view.dragged) return; // the end of a pan is not a click
    const g = ev.target.closest && ev.target.closest("[data-layer]");
    if (!g) return;
    model.set("selected", g.getAttribute("data-layer"));
    model.save_changes();
    highlightSelected(false);
  });
  search.addEventListener("input", () => applySearch(search.value));
  search.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter" || matches.length === 0) return;
    matchIdx = (matchIdx + 1) % matches.length;
    model.set("selected", matches[matchIdx]);
    model.save_changes();
    highlightSelected(true);
    matchInfo.textContent = `${matchIdx + 1} / ${matches.length}`;
  });
  colorSel.addEventListener("change", () => { model.set("color_by", colorSel.value); model.save_changes(); recolor(); });
  fitBtn.addEventListener("click", () => view.fit());
  zoomIn.addEventListener("click", () => view.zoomBy(1.25));
  zoomOut.addEventListener("click", () => view.zoomBy(0.8));

  const onGraph = () => relayout();
  const onColor = () => recolor();
  const onSelected = () => highlightSelected(true);
  const onSearch = () => { search.value = model.get("search") || ""; applySearch(search.value); };
  model.on("change:graph", onGraph);
  model.on("change:color_by", onColor);
  model.on("change:timing", onColor);
  model.on("change:errors", onColor);
  model.on("change:selected", onSelected);
  model.on("change:search", onSearch);
  search.value = model.get("search") || "";
  relayout();
  return () => {
    generation++;
    model.off("change:graph", onGraph);
    model.off("change:color_by", onColor);
    model.off("change:timing", onColor);
    model.off("change:errors", onColor);
    model.off("change:selected", onSelected);
    model.off("change:search", onSearch);
    view.dispose();
  };
}

export default { render };
