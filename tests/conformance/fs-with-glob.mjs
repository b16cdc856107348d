// `node:fs` plus a small `globSync` for Node 20 (see shim.mjs). It covers what the
// conformance suite asks of it — relative patterns with `*`, `?` and `**` segments, the `cwd`
// option, results as relative paths — and throws on anything else rather than guess.

import * as fs from "node:fs";
import * as path from "node:path";

export * from "node:fs";
export default fs.default ?? fs;

function segmentToRegExp(segment) {
  let re = "";
  for (const ch of segment) {
    if (ch === "*") re += "[^/]*";
    else if (ch === "?") re += "[^/]";
    else if ("[]{}!".includes(ch)) throw new Error(`globSync shim: unsupported pattern character ${ch}`);
    else re += ch.replace(/[.+^$()|\\]/g, "\\$&");
  }
  return re;
}

function patternToRegExp(pattern) {
  if (path.isAbsolute(pattern)) throw new Error("globSync shim: absolute patterns are not supported");
  const parts = pattern.split(/[\\/]+/).filter((p) => p !== "" && p !== ".");
  let re = "";
  parts.forEach((part, i) => {
    const last = i === parts.length - 1;
    if (part === "**") re += last ? ".*" : "(?:[^/]+/)*";
    else re += segmentToRegExp(part) + (last ? "" : "/");
  });
  return new RegExp(`^${re}$`);
}

export function globSync(pattern, options = {}) {
  const unsupported = Object.keys(options).filter((k) => k !== "cwd");
  if (unsupported.length > 0) throw new Error(`globSync shim: unsupported options ${unsupported.join(", ")}`);
  const cwd = options.cwd === undefined ? process.cwd() : String(options.cwd);
  const patterns = Array.isArray(pattern) ? pattern : [pattern];
  const regexps = patterns.map(patternToRegExp);
  let entries;
  try {
    entries = fs.readdirSync(cwd, { recursive: true });
  } catch (e) {
    if (e.code === "ENOENT" || e.code === "ENOTDIR") return [];
    throw e;
  }
  return entries
    .map((entry) => String(entry))
    .filter((entry) => regexps.some((re) => re.test(entry.split(path.sep).join("/"))));
}
