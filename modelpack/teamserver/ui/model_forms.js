// The registry's write forms: set or remove an alias, move a version to another stage.

import { api, path } from "./api.js";
import { empty, h, link, section, versionHref } from "./dom.js";

const STAGES = ["None", "Staging", "Production", "Archived"];

// Send a change, then show the outcome and re-read the page; errors go to the banner.
async function submit(ctx, button, request, success) {
  button.disabled = true;
  try {
    await request();
  } catch (error) {
    ctx.fail(error);
    button.disabled = false;
    return;
  }
  ctx.notify("success", success);
  await ctx.refresh();
}

function versionSelect(versions) {
  return h(
    "label",
    null,
    h("span", null, "Version"),
    h(
      "select",
      { name: "version", required: true },
      versions.map((v) => h("option", { value: v.version }, `v${v.version}`)),
    ),
  );
}

export function aliasesCard(ctx, model, versions) {
  const entries = Object.entries(model.aliases ?? {}).sort(([a], [b]) => a.localeCompare(b));
  const rows = entries.map(([alias, version]) =>
    h(
      "tr",
      { dataset: { alias } },
      h("td", null, h("span", { class: "chip chip-alias" }, `@${alias}`)),
      h("td", { class: "alias-version" }, link(versionHref(model.name, version), `v${version}`)),
      h(
        "td",
        { class: "actions" },
        h(
          "button",
          {
            type: "button",
            class: "link-button",
            title: `Remove alias ${alias}`,
            onclick: (event) => {
              if (!window.confirm(`Remove alias @${alias}?`)) return;
              submit(
                ctx,
                event.currentTarget,
                () => api(path("models", model.name, "aliases", alias), { method: "DELETE" }),
                `Alias @${alias} removed.`,
              );
            },
          },
          "remove",
        ),
      ),
    ),
  );
  const list = rows.length
    ? h("table", { class: "aliases-table" }, h("tbody", null, rows))
    : empty("No aliases.");
  return section("Aliases", list, versions.length ? aliasForm(ctx, model.name, versions) : null);
}

function aliasForm(ctx, name, versions) {
  const button = h("button", { type: "submit", class: "primary" }, "Set alias");
  const form = h(
    "form",
    { class: "inline-form set-alias" },
    h("h3", null, "Set alias"),
    h(
      "div",
      { class: "fields" },
      h(
        "label",
        null,
        h("span", null, "Alias"),
        h("input", {
          name: "alias",
          required: true,
          placeholder: "champion",
          autocomplete: "off",
          pattern: "[A-Za-z0-9_.\\-]+",
          title: "letters, digits, '_', '-' and '.'",
        }),
      ),
      versionSelect(versions),
      button,
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const alias = form.elements.alias.value.trim();
    const version = Number(form.elements.version.value);
    submit(
      ctx,
      button,
      () => api(path("models", name, "aliases", alias), { method: "PUT", body: { version } }),
      `Alias @${alias} now points to version ${version}.`,
    );
  });
  return form;
}

export function transitionForm(ctx, name, versions) {
  const button = h("button", { type: "submit", class: "primary" }, "Transition");
  const form = h(
    "form",
    { class: "inline-form transition-stage" },
    h(
      "div",
      { class: "fields" },
      versions.length > 1
        ? versionSelect(versions)
        : h("input", { type: "hidden", name: "version", value: versions[0].version }),
      h(
        "label",
        null,
        h("span", null, "Stage"),
        h(
          "select",
          { name: "stage" },
          STAGES.map((s) => h("option", { value: s }, s)),
        ),
      ),
      h(
        "label",
        { class: "grow" },
        h("span", null, "Comment"),
        h("input", { name: "comment", placeholder: "why (optional)", autocomplete: "off" }),
      ),
      button,
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const version = Number(form.elements.version.value);
    const stage = form.elements.stage.value;
    const comment = form.elements.comment.value.trim();
    submit(
      ctx,
      button,
      () =>
        api(`${path("models", name, "versions", version)}/stage`, {
          method: "POST",
          body: { stage, comment: comment || null },
        }),
      `Version ${version} moved to ${stage}.`,
    );
  });
  return section("Transition stage", form);
}
