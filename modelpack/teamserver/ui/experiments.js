// #/experiments: the experiments, and the selected one's runs in a sortable, filterable table.

import { api } from "./api.js";
import {
  compareValues,
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
  shortId,
} from "./dom.js";

const STATUSES = ["RUNNING", "FINISHED", "FAILED", "KILLED"];

export async function experimentsPage(ctx) {
  const { experiments } = await api("/experiments");
  if (!experiments.length) {
    ctx.show(
      "Experiments",
      h("h1", null, "Experiments"),
      empty("No experiments yet: runs logged with modelpack.tracking appear here."),
    );
    return;
  }
  const chosen = ctx.query.get("experiment") ?? newest(experiments).name;
  const { runs } = await api("/runs", { query: { experiment: chosen, max_results: 1000 } });
  ctx.show(
    chosen,
    h(
      "div",
      { class: "with-sidebar" },
      sidebar(experiments, chosen),
      h(
        "div",
        { class: "content" },
        h("h1", null, chosen),
        runs.length ? runsTable(runs) : empty("This experiment has no runs yet."),
      ),
    ),
  );
}

function newest(experiments) {
  const stamp = (e) => e.last_run_time ?? -1;
  return experiments.reduce((best, e) => (stamp(e) > stamp(best) ? e : best));
}

function sidebar(experiments, chosen) {
  return h(
    "aside",
    { class: "sidebar card" },
    h("h2", null, "Experiments"),
    h(
      "ul",
      { class: "experiment-list" },
      experiments.map((e) =>
        h(
          "li",
          null,
          h(
            "a",
            {
              href: experimentHref(e.name),
              "aria-current": e.name === chosen ? "page" : null,
            },
            h("span", { class: "experiment-name" }, e.name),
            h("span", { class: "count", title: "runs" }, String(e.run_count ?? 0)),
          ),
        ),
      ),
    ),
  );
}

function columnsFor(runs) {
  const keys = (field) => [...new Set(runs.flatMap((r) => Object.keys(r[field] ?? {})))].sort();
  return [
    {
      id: "name",
      label: "Run",
      value: runLabel,
      cell: (r) => [
        link(runHref(r.id), runLabel(r)),
        h("div", { class: "sub mono" }, shortId(r.id)),
      ],
    },
    { id: "status", label: "Status", value: (r) => r.status, cell: (r) => pill(r.status) },
    {
      id: "start",
      label: "Started",
      value: (r) => r.start_time,
      cell: (r) => formatTime(r.start_time),
    },
    {
      id: "duration",
      label: "Duration",
      value: (r) => (r.end_time == null ? null : r.end_time - r.start_time),
      cell: (r) => formatDuration(r.start_time, r.end_time),
    },
    ...keys("params").map((key) => ({
      id: `param:${key}`,
      label: key,
      group: "param",
      value: (r) => r.params?.[key],
      cell: (r) => r.params?.[key] ?? "—",
    })),
    ...keys("metrics").map((key) => ({
      id: `metric:${key}`,
      label: key,
      group: "metric",
      value: (r) => r.metrics?.[key],
      cell: (r) => formatNumber(r.metrics?.[key]),
    })),
  ];
}

function searchText(run) {
  const pairs = (obj) => Object.entries(obj ?? {}).map(([k, v]) => `${k}=${v}`);
  const fields = [run.name ?? "", run.id, ...pairs(run.params), ...pairs(run.tags)];
  return fields.join("\n").toLowerCase();
}

function runsTable(runs) {
  const columns = columnsFor(runs);
  const state = { sort: null, dir: 1, text: "", status: "", selected: new Set() };
  const tbody = h("tbody");
  const count = h("span", { class: "muted" });
  const compare = h(
    "button",
    { type: "button", class: "primary", disabled: true, onclick: goCompare },
    "Compare",
  );
  const selectAll = h("input", {
    type: "checkbox",
    title: "Select all shown",
    "aria-label": "Select all shown runs",
    onchange: toggleAll,
  });
  const headers = columns.map((col) =>
    h(
      "th",
      { class: col.group ? `col-${col.group}` : null, dataset: { col: col.id } },
      h("button", { type: "button", class: "sort", onclick: () => sortBy(col.id) }, col.label),
    ),
  );

  function visible() {
    const needle = state.text.trim().toLowerCase();
    let shown = runs.filter(
      (r) =>
        (!state.status || r.status === state.status) &&
        (!needle || searchText(r).includes(needle)),
    );
    const col = columns.find((c) => c.id === state.sort);
    if (col) {
      shown = [...shown].sort((a, b) => {
        const [x, y] = [col.value(a), col.value(b)];
        const blank = (v) => v == null || v === "";
        if (blank(x) || blank(y)) return compareValues(x, y); // blanks last either way
        return state.dir * compareValues(x, y);
      });
    }
    return shown;
  }

  function update() {
    const shown = visible();
    tbody.replaceChildren(
      ...shown.map((run) =>
        h(
          "tr",
          { dataset: { runId: run.id }, class: state.selected.has(run.id) ? "selected" : null },
          h(
            "td",
            { class: "check" },
            h("input", {
              type: "checkbox",
              checked: state.selected.has(run.id),
              "aria-label": `Select ${runLabel(run)}`,
              onchange: (event) => select(run.id, event.target.checked),
            }),
          ),
          columns.map((col) =>
            h("td", { class: col.group ? `col-${col.group}` : null }, col.cell(run)),
          ),
        ),
      ),
    );
    if (!shown.length) {
      const cell = h("td", { colspan: columns.length + 1, class: "empty" }, "No run matches.");
      tbody.append(h("tr", null, cell));
    }
    for (const th of headers) {
      const active = th.dataset.col === state.sort;
      th.setAttribute("aria-sort", active ? (state.dir > 0 ? "ascending" : "descending") : "none");
    }
    count.textContent = `${shown.length} of ${runs.length} runs`;
    const shownSelected = shown.filter((r) => state.selected.has(r.id)).length;
    selectAll.checked = shown.length > 0 && shownSelected === shown.length;
    selectAll.indeterminate = shownSelected > 0 && shownSelected < shown.length;
    compare.disabled = state.selected.size < 2;
    compare.textContent = state.selected.size ? `Compare (${state.selected.size})` : "Compare";
  }

  function sortBy(id) {
    state.dir = state.sort === id ? -state.dir : 1;
    state.sort = id;
    update();
  }

  function select(id, on) {
    if (on) state.selected.add(id);
    else state.selected.delete(id);
    update();
  }

  function toggleAll() {
    for (const run of visible()) {
      if (selectAll.checked) state.selected.add(run.id);
      else state.selected.delete(run.id);
    }
    update();
  }

  function goCompare() {
    const ids = runs.filter((r) => state.selected.has(r.id)).map((r) => r.id);
    location.hash = `#/compare?runs=${ids.map(encodeURIComponent).join(",")}`;
  }

  const groups = [
    h("th", { colspan: 1 + columns.filter((c) => !c.group).length, class: "group" }, ""),
    groupHeader(columns, "param", "Parameters"),
    groupHeader(columns, "metric", "Metrics"),
  ];
  const toolbar = h(
    "div",
    { class: "toolbar" },
    h("input", {
      type: "search",
      class: "filter",
      placeholder: "Filter by name, id, param or tag",
      "aria-label": "Filter runs",
      oninput: (event) => {
        state.text = event.target.value;
        update();
      },
    }),
    h(
      "select",
      {
        class: "status-filter",
        "aria-label": "Status",
        onchange: (event) => {
          state.status = event.target.value;
          update();
        },
      },
      h("option", { value: "" }, "All statuses"),
      STATUSES.map((s) => h("option", { value: s }, s[0] + s.slice(1).toLowerCase())),
    ),
    count,
    h("span", { class: "spacer" }),
    compare,
  );
  update();
  return h(
    "div",
    { class: "card runs" },
    toolbar,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "runs-table" },
        h(
          "thead",
          null,
          h("tr", { class: "groups" }, groups),
          h("tr", null, h("th", { class: "check" }, selectAll), headers),
        ),
        tbody,
      ),
    ),
  );
}

function groupHeader(columns, group, title) {
  const span = columns.filter((c) => c.group === group).length;
  return span ? h("th", { colspan: span, class: `group col-${group}` }, title) : null;
}
