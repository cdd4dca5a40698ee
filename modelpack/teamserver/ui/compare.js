// #/compare?runs=a,b: runs side by side, and one chart per metric with a line per run.

import { api, path } from "./api.js";
import { chartCard, colorOf, drawChart } from "./charts.js";
import {
  empty,
  experimentHref,
  formatDuration,
  formatNumber,
  formatTime,
  h,
  link,
  pill,
  runHref,
  runLabel,
  section,
  shortId,
} from "./dom.js";

export async function comparePage(ctx) {
  const ids = [...new Set((ctx.query.get("runs") ?? "").split(",").filter(Boolean))];
  if (ids.length < 2) {
    ctx.show(
      "Compare runs",
      h("h1", null, "Compare runs"),
      empty("Select two runs or more on the experiments page to compare them."),
    );
    return;
  }
  const loaded = await Promise.all(
    ids.map(async (id) => {
      const [run, history] = await Promise.all([
        api(path("runs", id)),
        api(path("runs", id, "metrics")),
      ]);
      return { run, metrics: history.metrics ?? {} };
    }),
  );
  const runs = loaded.map((item) => item.run);
  const labels = uniqueLabels(runs);
  const keys = [...new Set(loaded.flatMap((item) => Object.keys(item.metrics)))].sort();
  const cards = keys.map((key) => chartCard(key));
  const shown = ctx.show(
    `Compare ${runs.length} runs`,
    h("nav", { class: "crumbs" }, link("#/experiments", "Experiments"), h("span", null, "Compare")),
    h("h1", null, `Comparing ${runs.length} runs`),
    h(
      "div",
      { class: "legend-chips" },
      runs.map((run, i) =>
        h(
          "a",
          { class: "run-chip", href: runHref(run.id) },
          h("span", { class: "swatch", style: `background:${colorOf(i)}` }),
          labels[i],
        ),
      ),
    ),
    section(
      "Charts",
      keys.length
        ? h("div", { class: "charts" }, cards)
        : empty("None of these runs logged metrics."),
    ),
    section("Parameters", paramsSection(runs, labels)),
    section("Metrics (last value)", sideBySide(runs, labels, metricRows(runs))),
    section("Runs", sideBySide(runs, labels, overviewRows(runs))),
  );
  if (!shown) return;
  keys.forEach((key, i) => {
    const series = loaded.map((item, j) => ({ label: labels[j], points: item.metrics[key] ?? [] }));
    ctx.onLeave(drawChart(cards[i].querySelector(".chart"), series));
  });
}

// Run names, with the id added where two runs share one.
function uniqueLabels(runs) {
  const counts = new Map();
  for (const run of runs) counts.set(runLabel(run), (counts.get(runLabel(run)) ?? 0) + 1);
  return runs.map((run) =>
    counts.get(runLabel(run)) > 1 ? `${runLabel(run)} (${shortId(run.id)})` : runLabel(run),
  );
}

// A table with a row per field and a column per run; rows whose values differ are marked.
function sideBySide(runs, labels, rows, { onlyDiffs = false } = {}) {
  if (!rows.length) return empty("Nothing to show.");
  const body = rows
    .map(({ name, values, display = (v) => v ?? "—", compare = true }) => {
      const differs = compare && new Set(values.map((v) => String(v ?? ""))).size > 1;
      if (onlyDiffs && !differs) return null;
      return h(
        "tr",
        { class: differs ? "differs" : null },
        h("th", { scope: "row" }, name),
        values.map((v) => h("td", null, display(v))),
      );
    })
    .filter(Boolean);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "side-by-side" },
      h(
        "thead",
        null,
        h(
          "tr",
          null,
          h("th", null, ""),
          runs.map((run, i) =>
            h(
              "th",
              null,
              h("span", { class: "swatch", style: `background:${colorOf(i)}` }),
              link(runHref(run.id), labels[i]),
            ),
          ),
        ),
      ),
      h(
        "tbody",
        null,
        body.length
          ? body
          : h("tr", null, h("td", { colspan: runs.length + 1, class: "empty" }, "No differences.")),
      ),
    ),
  );
}

function overviewRows(runs) {
  const row = (name, get, display) => ({ name, values: runs.map(get), display, compare: false });
  return [
    row("Run ID", (r) => r.id, (v) => h("code", null, shortId(v))),
    row("Experiment", (r) => r.experiment, (v) => link(experimentHref(v), v)),
    row("Status", (r) => r.status, (v) => pill(v)),
    row("Started", (r) => r.start_time, formatTime),
    row("Duration", (r) => r, (r) => formatDuration(r.start_time, r.end_time)),
  ];
}

function keyRows(runs, field, display) {
  const keys = [...new Set(runs.flatMap((r) => Object.keys(r[field] ?? {})))].sort();
  return keys.map((key) => ({ name: key, values: runs.map((r) => r[field]?.[key]), display }));
}

function metricRows(runs) {
  return keyRows(runs, "metrics", formatNumber).map((row) => ({ ...row, compare: false }));
}

function paramsSection(runs, labels) {
  const rows = keyRows(runs, "params");
  if (!rows.length) return empty("None of these runs logged parameters.");
  const holder = h("div", null, sideBySide(runs, labels, rows));
  const toggle = h("input", {
    type: "checkbox",
    onchange: () =>
      holder.replaceChildren(sideBySide(runs, labels, rows, { onlyDiffs: toggle.checked })),
  });
  return [h("label", { class: "inline-toggle" }, toggle, " Only differences"), holder];
}
