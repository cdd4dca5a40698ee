// #/models, #/models/{name} and #/models/{name}/versions/{v}: the model registry.

import { api, eq, path } from "./api.js";
import {
  chips,
  empty,
  formatTime,
  h,
  keyValues,
  link,
  modelHref,
  pill,
  runHref,
  section,
  shortId,
  table,
  tagChips,
  versionHref,
} from "./dom.js";
import { aliasesCard, transitionForm } from "./model_forms.js";
import { signatureView } from "./signature.js";

const PAGE_SIZE = 100;

export async function modelsPage(ctx) {
  const headers = ["Name", "Latest version", "Aliases", "Tags", "Updated"];
  const list = table(headers, [], { class: "models-table" });
  const more = h("button", { type: "button", class: "load-more", hidden: true }, "Load more");
  let token = null;
  async function load() {
    const page = await api("/models", { query: { max_results: PAGE_SIZE, page_token: token } });
    list.querySelector("tbody").append(...page.models.map(modelRow));
    token = page.next_page_token ?? null;
    more.hidden = !token;
    return page.models.length;
  }
  more.addEventListener("click", () => load().catch(ctx.fail));
  const count = await load();
  ctx.show(
    "Models",
    h("h1", null, "Registered models"),
    h(
      "div",
      { class: "card" },
      count
        ? [list, more]
        : empty("No registered models yet: register one with modelpack.registry.register()."),
    ),
  );
}

function modelRow(model) {
  return h(
    "tr",
    { dataset: { model: model.name } },
    h(
      "td",
      null,
      link(modelHref(model.name), model.name),
      model.description ? h("div", { class: "sub" }, model.description) : null,
    ),
    h(
      "td",
      null,
      model.latest_version == null
        ? "—"
        : link(versionHref(model.name, model.latest_version), `v${model.latest_version}`),
    ),
    h("td", null, aliasChips(model.aliases)),
    h("td", null, tagChips(model.tags)),
    h("td", null, formatTime(model.updated_at)),
  );
}

function aliasChips(aliases) {
  const entries = Object.entries(aliases ?? {}).sort(([a], [b]) => a.localeCompare(b));
  return chips(entries.map(([alias, version]) => `@${alias} → v${version}`), "chip chip-alias");
}

export async function modelPage(ctx) {
  const [name] = ctx.params;
  const [model, { versions }, { transitions }] = await Promise.all([
    api(path("models", name)),
    api("/versions", {
      query: { filter: eq("name", name), order_by: "version DESC", max_results: 200 },
    }),
    api(`${path("models", name)}/history`),
  ]);
  ctx.show(
    name,
    h("nav", { class: "crumbs" }, link("#/models", "Models"), h("span", null, name)),
    h("h1", null, name),
    model.description ? h("p", { class: "description" }, model.description) : null,
    h(
      "div",
      { class: "grid-2" },
      aliasesCard(ctx, model, versions),
      section(
        "Details",
        keyValues([
          ["Latest version", model.latest_version == null ? "—" : `v${model.latest_version}`],
          ["Created", formatTime(model.created_at)],
          ["Updated", formatTime(model.updated_at)],
          ["Tags", tagChips(model.tags)],
        ]),
      ),
    ),
    section("Versions", versionsTable(versions)),
    versions.length ? transitionForm(ctx, name, versions) : null,
    section("Stage history", historyTable(transitions, { withVersion: true, name })),
  );
}

function versionsTable(versions) {
  if (!versions.length) return empty("No versions.");
  return table(
    ["Version", "Stage", "Aliases", "Run", "Parent", "Created", "Flavors"],
    versions.map((v) =>
      h(
        "tr",
        { dataset: { version: v.version } },
        h("td", null, link(versionHref(v.name, v.version), `v${v.version}`)),
        h("td", null, pill(v.stage)),
        h("td", null, chips((v.aliases ?? []).map((a) => `@${a}`), "chip chip-alias")),
        h("td", null, runLink(v.run_id, shortId(v.run_id))),
        h("td", null, parentLink(v.parent)),
        h("td", null, formatTime(v.created_at)),
        h("td", null, chips(v.flavors ?? [])),
      ),
    ),
    { class: "versions-table" },
  );
}

function runLink(runId, text) {
  return runId ? link(runHref(runId), h("code", null, text)) : "—";
}

const shortSha = (sha) => (sha ?? "").slice(0, 16);

function parentLink(parent) {
  if (!parent) return "—";
  const cut = parent.lastIndexOf("/");
  if (cut < 0) return parent;
  return link(versionHref(parent.slice(0, cut), parent.slice(cut + 1)), parent);
}

function historyTable(transitions, { withVersion, name }) {
  if (!transitions.length) return empty("No stage transitions yet.");
  const rows = [...transitions].sort((a, b) => b.timestamp - a.timestamp);
  const headers = ["When", "From", "To", "User", "Comment"];
  return table(
    withVersion ? ["Version", ...headers] : headers,
    rows.map((t) =>
      h(
        "tr",
        null,
        withVersion ? h("td", null, link(versionHref(name, t.version), `v${t.version}`)) : null,
        h("td", null, formatTime(t.timestamp)),
        h("td", null, pill(t.from_stage)),
        h("td", null, pill(t.to_stage)),
        h("td", null, t.user ?? "—"),
        h("td", null, t.comment || h("span", { class: "muted" }, "—")),
      ),
    ),
    { class: "history-table" },
  );
}

export async function versionPage(ctx) {
  const [name, version] = ctx.params;
  const base = path("models", name, "versions", version);
  const [v, { transitions }] = await Promise.all([
    api(base),
    api(`${path("models", name)}/history`, { query: { version } }),
  ]);
  ctx.show(
    `${name} v${v.version}`,
    h(
      "nav",
      { class: "crumbs" },
      link("#/models", "Models"),
      link(modelHref(name), name),
      h("span", null, `v${v.version}`),
    ),
    h(
      "h1",
      null,
      `${name} `,
      h("span", { class: "version-number" }, `v${v.version}`),
      " ",
      pill(v.stage),
    ),
    v.description ? h("p", { class: "description" }, v.description) : null,
    h(
      "div",
      { class: "grid-2" },
      section(
        "Details",
        keyValues([
          ["Status", v.status ?? "—"],
          ["Stage", pill(v.stage)],
          ["Aliases", chips((v.aliases ?? []).map((a) => `@${a}`), "chip chip-alias")],
          ["Flavors", chips(v.flavors ?? [])],
          ["Source", h("code", null, v.source ?? "—")],
          ["Created", formatTime(v.created_at)],
          ["Updated", formatTime(v.updated_at)],
          ["Descriptor", h("code", { title: v.descriptor_sha256 }, shortSha(v.descriptor_sha256))],
        ]),
      ),
      section(
        "Lineage",
        keyValues([
          ["Run", runLink(v.run_id, v.run_id)],
          ["Parent version", parentLink(v.parent)],
        ]),
        h("h3", null, "Tags"),
        keyValues(v.tags, "No tags."),
      ),
    ),
    section("Signature", signatureView(v.signature)),
    transitionForm(ctx, name, [v]),
    section("Stage history", historyTable(transitions, { withVersion: false, name })),
  );
}
