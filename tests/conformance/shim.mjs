// Lets @modelcontextprotocol/conformance (built for Node 22) run on Node 20.
//
// Usage: node --import ./shim.mjs node_modules/@modelcontextprotocol/conformance/dist/index.js …
//
// The suite's bundle needs exactly one thing Node 20 lacks: `import { globSync } from "fs"`
// (fs.globSync, added in Node 22.0). The import is static, so without it the bundle does not
// even load; the function itself is only called by `tier-check` (it scores checks.json files).
// A named export cannot be added to a built-in module's ESM namespace at run time (Node 20
// fixes the export names at start-up), so this module registers a resolve hook that hands
// modules inside the conformance package a copy of `fs` that also exports `globSync`.
// On Node 22+ it does nothing.
//
// If a later version of the suite needs more of Node 22, it fails loudly at load time
// ("does not provide an export named …") or with a TypeError; package-lock.json pins the
// version this shim was checked against.

import * as fs from "node:fs";
import { register } from "node:module";

if (typeof fs.globSync !== "function") {
  register(new URL(import.meta.url));
}

const FS_WITH_GLOB = new URL("./fs-with-glob.mjs", import.meta.url).href;

/** Module resolve hook (runs on the loader thread): `fs` / `node:fs` → fs-with-glob.mjs. */
export async function resolve(specifier, context, nextResolve) {
  if (
    (specifier === "fs" || specifier === "node:fs") &&
    context.parentURL?.includes("/node_modules/@modelcontextprotocol/conformance/")
  ) {
    return { url: FS_WITH_GLOB, shortCircuit: true };
  }
  return nextResolve(specifier, context);
}
