// Small DOM helpers. Model strings (node names, op types, shapes) only ever reach the page through
// textContent or setAttribute, never innerHTML, so a name like "<script>" is shown, not run.

const NS = "http://www.w3.org/2000/svg";

export function svgEl(tag, attrs = {}, parent = null) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (parent) parent.appendChild(el);
  return el;
}

export function htmlEl(tag, attrs = {}, parent = null, text = null) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== null) el.textContent = text;
  if (parent) parent.appendChild(el);
  return el;
}

export function svgText(parent, x, y, text, cls) {
  const t = svgEl("text", { x, y, class: cls }, parent);
  t.textContent = text;
  return t;
}

export function truncate(s, n) {
  s = s || "";
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

export const CSS = `
.wb-graph { font: 11px/1.3 system-ui, sans-serif; border: 1px solid #ccc; border-radius: 4px; background: #fff; color: #222; }
.wb-toolbar { display: flex; gap: 8px; align-items: center; padding: 4px 6px; border-bottom: 1px solid #ddd; flex-wrap: wrap; }
.wb-toolbar input, .wb-toolbar select, .wb-toolbar button { font: inherit; padding: 1px 4px; }
.wb-status { color: #666; margin-left: auto; }
.wb-legend { display: flex; gap: 8px; flex-wrap: wrap; padding: 2px 6px; border-bottom: 1px solid #eee; }
.wb-legend span.sw { display: inline-block; width: 10px; height: 10px; border: 1px solid #999; margin-right: 3px; vertical-align: -1px; }
.wb-canvas { width: 100%; overflow: hidden; cursor: grab; touch-action: none; }
.wb-canvas.dragging { cursor: grabbing; }
.wb-canvas text { pointer-events: none; fill: #222; }
.wb-canvas .wb-type { font-weight: 600; font-size: 11px; }
.wb-canvas .wb-sub { font-size: 9px; fill: #555; }
.wb-canvas .wb-layer > rect { stroke: #555; stroke-width: 1; cursor: pointer; }
.wb-canvas .wb-group > rect { stroke-dasharray: 4 2; fill-opacity: 0.35; }
.wb-canvas .wb-onnx > rect { fill: #fff; fill-opacity: 0.9; stroke: #888; stroke-width: 0.8; cursor: pointer; }
.wb-canvas .wb-io > rect { fill: #f4f4f4; stroke: #999; stroke-dasharray: 2 2; }
.wb-canvas .wb-layer.wb-match > rect { stroke: #e6550d; stroke-width: 3; }
.wb-canvas .wb-layer.wb-selected > rect { stroke: #08519c; stroke-width: 4; }
.wb-canvas path.wb-edge { fill: none; stroke: #777; stroke-width: 1; marker-end: url(#wb-arrow); }
.wb-canvas path.wb-child-edge { fill: none; stroke: #aaa; stroke-width: 0.8; }
.wb-canvas .wb-edge-label { font-size: 8.5px; fill: #3a6; }
.wb-canvas path { pointer-events: none; }
.wb-canvas.wb-far .wb-edge-label, .wb-canvas.wb-far .wb-sub { display: none; }
`;
