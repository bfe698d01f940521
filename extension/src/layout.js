// Turns the widget's graph data into an ELK graph, lays it out, and returns absolute positions.
// Fused layers become compound ELK nodes whose children are the original ONNX nodes.

const CHAR_W = 6.6; // px per character of the 11px label font (measured, monospace-ish estimate)

function boxWidth(...labels) {
  const n = Math.max(...labels.map((s) => (s || "").length));
  return Math.min(220, Math.max(64, Math.round(n * CHAR_W) + 16));
}

// Layout options picked for speed at 1,000+ nodes: lower thoroughness and simple edge routing
// keep elkjs near 1 s for ~1,000 nodes in headless Chromium.
const ROOT_OPTIONS = {
  "elk.algorithm": "layered",
  "elk.direction": "DOWN",
  "elk.layered.spacing.nodeNodeBetweenLayers": "28",
  "elk.spacing.nodeNode": "14",
  "elk.spacing.edgeNode": "8",
  "elk.layered.thoroughness": "3",
  "elk.edgeRouting": "POLYLINE",
  "elk.layered.nodePlacement.strategy": "BRANDES_KOEPF",
};
const GROUP_OPTIONS = {
  ...ROOT_OPTIONS,
  "elk.padding": "[top=24,left=8,bottom=8,right=8]",
  "elk.layered.spacing.nodeNodeBetweenLayers": "16",
};

export function toElk(data) {
  const children = data.nodes.map((n) => {
    if (n.children && n.children.length > 0) {
      return {
        id: n.id,
        layoutOptions: GROUP_OPTIONS,
        children: n.children.map((c) => ({ id: c.id, width: boxWidth(c.label), height: 24 })),
        edges: (n.child_edges || []).map(([s, t], i) => ({ id: `${n.id}:e${i}`, sources: [s], targets: [t] })),
      };
    }
    return { id: n.id, width: boxWidth(n.label, n.sub), height: n.sub ? 34 : 24 };
  });
  const edges = data.edges.map((e, i) => ({ id: `e${i}`, sources: [e.source], targets: [e.target] }));
  return { id: "root", layoutOptions: ROOT_OPTIONS, children, edges };
}

function sectionPoints(edge, dx, dy) {
  const pts = [];
  for (const s of edge.sections || []) {
    pts.push([s.startPoint.x + dx, s.startPoint.y + dy]);
    for (const b of s.bendPoints || []) pts.push([b.x + dx, b.y + dy]);
    pts.push([s.endPoint.x + dx, s.endPoint.y + dy]);
  }
  return pts;
}

// Runs elkjs and returns {width, height, boxes: Map(id -> {x,y,width,height}), edges: [{points, label}],
// childEdges: [{points}], ms}.
export async function layoutGraph(elk, data) {
  const t0 = performance.now();
  const res = await elk.layout(toElk(data));
  const ms = performance.now() - t0;
  const boxes = new Map();
  const childEdges = [];
  for (const n of res.children || []) {
    boxes.set(n.id, { x: n.x, y: n.y, width: n.width, height: n.height });
    for (const c of n.children || []) {
      boxes.set(c.id, { x: n.x + c.x, y: n.y + c.y, width: c.width, height: c.height });
    }
    for (const e of n.edges || []) childEdges.push({ points: sectionPoints(e, n.x, n.y) });
  }
  const edges = (res.edges || []).map((e) => {
    const src = data.edges[Number(e.id.slice(1))]; // ids are "e<index>" (see toElk)
    return { points: sectionPoints(e, 0, 0), label: (src && src.label) || "" };
  });
  return { width: res.width, height: res.height, boxes, edges, childEdges, ms };
}
