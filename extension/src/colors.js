// Colour schemes for the "colour by" modes. Pure functions of the node data.

export const PRECISION_COLORS = {
  fp32: "#9ecae1", tf32: "#6baed6", fp16: "#fdae6b", bf16: "#fd8d3c",
  int8: "#a1d99b", fp8: "#74c476", mixed: "#dadaeb",
};

// A stable hue per op type, so "Conv" has the same colour in every graph.
export function opColor(type) {
  let h = 0;
  for (let i = 0; i < type.length; i++) h = (h * 31 + type.charCodeAt(i)) >>> 0;
  return `hsl(${h % 360}, 55%, 78%)`;
}

// White -> red by the layer's share of the measured time (pct in 0..100). Grey: not profiled.
export function timeColor(pct, maxPct) {
  if (pct === undefined || pct === null) return "#eeeeee";
  const t = Math.sqrt(Math.max(0, pct) / Math.max(maxPct, 1e-9)); // sqrt: small layers stay visible
  const g = Math.round(245 - 180 * t), b = Math.round(240 - 200 * t);
  return `rgb(250, ${g}, ${b})`;
}

// White -> purple by the layer's relative error vs fp32 on a log scale (1e-6 .. 1e-1 and above).
// Grey: not measured; black: non-finite.
export const ERROR_DECADES = [-6, -1];
export function errorColor(err) {
  if (err === undefined || err === null) return "#eeeeee";
  if (!Number.isFinite(Number(err))) return "#222222";
  const lg = Math.log10(Math.max(Number(err), 1e-12));
  const t = Math.min(1, Math.max(0, (lg - ERROR_DECADES[0]) / (ERROR_DECADES[1] - ERROR_DECADES[0])));
  const r = Math.round(248 - 130 * t), g = Math.round(246 - 200 * t), b = Math.round(250 - 80 * t);
  return `rgb(${r}, ${g}, ${b})`;
}

export function colorFor(node, mode, timing, maxPct, errors) {
  if (mode === "op") return opColor(node.type || "?");
  if (mode === "time") return timeColor(timing[node.layer], maxPct);
  if (mode === "error") return errorColor((errors || {})[node.layer]);
  return PRECISION_COLORS[node.precision] || "#e0e0e0";
}

// Legend entries [label, colour] for the current mode.
export function legendFor(nodes, mode, maxPct) {
  if (mode === "error") {
    return [["not measured", "#eeeeee"], ["rel err 1e-6", errorColor(1e-6)], ["1e-4", errorColor(1e-4)],
            ["1e-2", errorColor(1e-2)], [">= 1e-1", errorColor(1e-1)], ["non-finite", "#222222"]];
  }
  if (mode === "time") {
    return [["not profiled", "#eeeeee"], ["0%", timeColor(0, maxPct)],
            [`${(maxPct / 2).toFixed(1)}%`, timeColor(maxPct / 2, maxPct)], [`${maxPct.toFixed(1)}%`, timeColor(maxPct, maxPct)]];
  }
  const key = mode === "op" ? "type" : "precision";
  const counts = new Map();
  for (const n of nodes) if (n.layer !== null && n[key]) counts.set(n[key], (counts.get(n[key]) || 0) + 1);
  const entries = [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, 16);
  return entries.map(([k, c]) => [`${k} (${c})`, mode === "op" ? opColor(k) : (PRECISION_COLORS[k] || "#e0e0e0")]);
}
