// Bundles src/index.js (the anywidget ES module) and elkjs into ../workbench/static/graph.js.
// The bundle is committed, so an installed workbench and CI need neither npm nor a network.
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
await build({
  entryPoints: [path.join(here, "src", "index.js")],
  outfile: path.join(here, "..", "workbench", "static", "graph.js"),
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: true,
  legalComments: "eof", // keep elkjs's EPL-2.0 notice in the bundle
  logLevel: "info",
});
