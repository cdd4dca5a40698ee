// #/deployments: what is deployed where.

import { api } from "./api.js";
import { empty, h, link, pill, table, versionHref } from "./dom.js";

export async function deploymentsPage(ctx) {
  const { deployments, errors = [] } = await api("/deployments");
  ctx.show(
    "Deployments",
    h("h1", null, "Deployments"),
    // A target that could not list its deployments says so, instead of looking empty.
    ...errors.map((e) =>
      h(
        "div",
        { class: "card banner-error", dataset: { target: e.target } },
        `${e.target}: could not list deployments (${e.error?.code ?? "error"}): `,
        h("code", null, e.error?.message ?? ""),
      ),
    ),
    h(
      "div",
      { class: "card" },
      deployments.length
        ? table(
            ["Name", "Target", "Model", "Status", "Endpoint"],
            deployments.map((d) =>
              h(
                "tr",
                { dataset: { deployment: d.name } },
                h("td", null, d.name),
                h("td", null, d.target ?? "—"),
                h("td", null, modelLink(d.model_uri)),
                h("td", null, pill(d.status)),
                h("td", null, endpointLink(d.endpoint)),
              ),
            ),
          )
        : empty(
            "No deployments yet: create one with ",
            h("code", null, "modelpack deploy create"),
            ".",
          ),
    ),
  );
}

// models:/NAME/VERSION links to the version; anything else (an alias, a path) stays text.
function modelLink(uri) {
  const match = /^models:\/(.+)\/(\d+)$/.exec(uri ?? "");
  const text = h("code", null, uri ?? "—");
  return match ? link(versionHref(decodeURIComponent(match[1]), match[2]), text) : text;
}

function endpointLink(endpoint) {
  if (!endpoint) return "—";
  if (/^https?:\/\//.test(endpoint)) {
    return h("a", { href: endpoint, target: "_blank", rel: "noopener noreferrer" }, endpoint);
  }
  return h("code", null, endpoint);
}
