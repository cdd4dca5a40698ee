// #/runs/{id}: one run's details, artifacts, registered versions and a chart per metric.

import { api, eq, path } from "./api.js";
import { chartCard, drawChart } from "./charts.js";
import {
  empty,
  experimentHref,
  formatBytes,
  formatDuration,
  formatNumber,
  formatTime,
  h,
  keyValues,
  link,
  modelHref,
  pill,
  runHref,
  runLabel,
  section,
  table,
  versionHref,
} from "./dom.js";

export async function runPage(ctx) {
  const [id] = ctx.params;
  const [run, history, files, registered] = await Promise.all([
    api(path("runs", id)),
    api(path("runs", id, "metrics")),
    api(path("runs", id, "artifacts")),
    api("/versions", { query: { filter: eq("run_id", id), max_results: 100 } }),
  ]);
  const metrics = history.metrics ?? {};
  const keys = Object.keys(metrics).sort();
  const cards = keys.map((key) => chartCard(key));
  const shown = ctx.show(
    runLabel(run),
    h(
      "nav",
      { class: "crumbs" },
      link("#/experiments", "Experiments"),
      link(experimentHref(run.experiment), run.experiment),
      h("span", null, runLabel(run)),
    ),
    h("h1", null, runLabel(run), " ", pill(run.status)),
    h(
      "div",
      { class: "grid-2" },
      section("Overview", overview(run)),
      section("Parameters", paramsTable(run.params)),
    ),
    h(
      "div",
      { class: "grid-2" },
      section("Metrics", metricsTable(run.metrics, metrics)),
      section("Tags", keyValues(run.tags, "No tags.")),
    ),
    section(
      "Charts",
      keys.length ? h("div", { class: "charts" }, cards) : empty("No metrics logged."),
    ),
    section("Artifacts", artifactsTable(files.artifacts ?? {})),
    section("Registered model versions", versionsTable(registered.versions ?? [])),
  );
  if (!shown) return;
  keys.forEach((key, i) => {
    const chart = cards[i].querySelector(".chart");
    ctx.onLeave(drawChart(chart, [{ label: runLabel(run), points: metrics[key] }]));
  });
}

function overview(run) {
  return keyValues([
    ["Run ID", h("code", null, run.id)],
    ["Name", run.name ?? "—"],
    ["Experiment", link(experimentHref(run.experiment), run.experiment)],
    ["Status", pill(run.status)],
    ["Started", formatTime(run.start_time)],
    ["Ended", formatTime(run.end_time)],
    ["Duration", formatDuration(run.start_time, run.end_time)],
    ["Parent run", run.parent_id ? link(runHref(run.parent_id), run.parent_id) : "—"],
  ]);
}

function paramsTable(params) {
  const entries = Object.entries(params ?? {}).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) return empty("No parameters.");
  return table(
    ["Name", "Value"],
    entries.map(([k, v]) => h("tr", null, h("td", null, k), h("td", { class: "mono" }, v))),
  );
}

function metricsTable(last, history) {
  const entries = Object.entries(last ?? {}).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) return empty("No metrics.");
  return table(
    ["Name", "Last value", "Steps"],
    entries.map(([k, v]) =>
      h(
        "tr",
        null,
        h("td", null, k),
        h("td", { class: "num" }, formatNumber(v)),
        h("td", { class: "num" }, String(history[k]?.length ?? 0)),
      ),
    ),
  );
}

function artifactsTable(artifacts) {
  const entries = Object.entries(artifacts).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) return empty("No artifacts.");
  return table(
    ["Path", "Size", "SHA-256"],
    entries.map(([file, info]) =>
      h(
        "tr",
        null,
        h("td", { class: "mono" }, file),
        h("td", { class: "num" }, formatBytes(info.size)),
        h("td", { class: "mono muted", title: info.sha256 }, (info.sha256 ?? "").slice(0, 12)),
      ),
    ),
  );
}

function versionsTable(versions) {
  if (!versions.length) return empty("No model version was registered from this run.");
  return table(
    ["Model", "Version", "Stage", "Created"],
    versions.map((v) =>
      h(
        "tr",
        null,
        h("td", null, link(modelHref(v.name), v.name)),
        h("td", null, link(versionHref(v.name, v.version), `v${v.version}`)),
        h("td", null, pill(v.stage)),
        h("td", null, formatTime(v.created_at)),
      ),
    ),
  );
}
