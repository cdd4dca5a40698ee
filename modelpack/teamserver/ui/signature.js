// A model signature as tables. Accepts a plain list of specs, or the descriptor's
// {"type": "columns", "columns": [...]} / {"type": "tensors", "tensors": [...]} form.

import { empty, h, table } from "./dom.js";

export function signatureView(signature) {
  if (!signature) return empty("This version has no signature.");
  const parts = [
    ["Inputs", specs(signature.inputs)],
    ["Outputs", specs(signature.outputs)],
    ["Parameters", specs(signature.params)],
  ];
  return h(
    "div",
    { class: "signature" },
    parts
      .filter(([title, list]) => title !== "Parameters" || list.length)
      .map(([title, list]) =>
        h(
          "div",
          { class: `signature-${title.toLowerCase()}` },
          h("h3", null, title),
          specTable(list),
        ),
      ),
  );
}

function specs(part) {
  if (part == null) return [];
  if (Array.isArray(part)) return part;
  if (Array.isArray(part.columns)) return part.columns;
  if (Array.isArray(part.tensors)) return part.tensors;
  // Parameters come as {name: {type, default}} or {name: default}.
  return Object.entries(part)
    .filter(([key]) => key !== "type")
    .map(([name, spec]) =>
      spec && typeof spec === "object" ? { name, ...spec } : { name, default: spec },
    );
}

function specTable(list) {
  if (!list.length) return empty("None declared.");
  return table(
    ["Name", "Type", "Shape", "Required"],
    list.map((spec) =>
      h(
        "tr",
        null,
        h("td", null, spec.name ?? h("span", { class: "muted" }, "(unnamed)")),
        h("td", { class: "mono" }, spec.type ?? spec.dtype ?? "—"),
        h("td", { class: "mono" }, shapeText(spec.shape)),
        h("td", null, spec.required === false || spec.optional ? "optional" : "yes"),
      ),
    ),
  );
}

function shapeText(shape) {
  return Array.isArray(shape) ? `(${shape.join(", ")})` : "—";
}
