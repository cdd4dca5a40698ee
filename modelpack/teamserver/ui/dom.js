// DOM building and formatting. Data only ever reaches the page as text nodes or attribute
// values set through the DOM API, never as HTML.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value == null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (typeof value === "boolean") el.toggleAttribute(key, value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function link(href, ...children) {
  return h("a", { href }, ...children);
}

export const experimentHref = (name) => `#/experiments?experiment=${encodeURIComponent(name)}`;
export const runHref = (id) => `#/runs/${encodeURIComponent(id)}`;
export const modelHref = (name) => `#/models/${encodeURIComponent(name)}`;
export const versionHref = (name, version) =>
  `${modelHref(name)}/versions/${encodeURIComponent(version)}`;

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", null, title), ...children);
}

export function empty(...message) {
  return h("p", { class: "empty" }, ...message);
}

export function table(headers, rows, attrs) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      attrs,
      h("thead", null, h("tr", null, headers.map((title) => h("th", null, title)))),
      h("tbody", null, rows),
    ),
  );
}

// A two-column key/value list for an object's fields; nothing when there are none.
export function keyValues(pairs, emptyMessage) {
  const entries = Array.isArray(pairs) ? pairs : Object.entries(pairs ?? {});
  if (!entries.length) return empty(emptyMessage);
  return h(
    "dl",
    { class: "kv" },
    entries.map(([key, value]) => [h("dt", null, key), h("dd", null, value ?? "—")]),
  );
}

export function chips(items, cls = "chip") {
  if (!items.length) return h("span", { class: "muted" }, "—");
  return h("span", { class: "chips" }, items.map((item) => h("span", { class: cls }, item)));
}

export function tagChips(tags) {
  return chips(Object.entries(tags ?? {}).map(([k, v]) => `${k}=${v}`));
}

export function pill(text, kind) {
  if (text == null || text === "") return h("span", { class: "muted" }, "—");
  return h("span", { class: `pill pill-${(kind ?? text).toString().toLowerCase()}` }, text);
}

const pad = (n) => String(n).padStart(2, "0");

export function formatTime(ms) {
  if (ms == null) return "—";
  const d = new Date(ms);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

export function formatDuration(start, end) {
  if (start == null) return "—";
  if (end == null) return "running";
  const ms = Math.max(0, end - start);
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function formatNumber(value) {
  if (value == null || Number.isNaN(value)) return "—";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(3);
  return String(Number(value.toPrecision(4)));
}

export function formatBytes(size) {
  if (size == null) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = size;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export const shortId = (id) => (id ? String(id).slice(0, 8) : "");

export function runLabel(run) {
  return run.name || shortId(run.id);
}

// Natural ordering for table cells: numbers by value, text alphabetically, blanks last.
export function compareValues(a, b) {
  const blankA = a == null || a === "";
  const blankB = b == null || b === "";
  if (blankA || blankB) return blankA === blankB ? 0 : blankA ? 1 : -1;
  const numA = typeof a === "number" ? a : Number(a);
  const numB = typeof b === "number" ? b : Number(b);
  if (!Number.isNaN(numA) && !Number.isNaN(numB)) return numA - numB;
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}
