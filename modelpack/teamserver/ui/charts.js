// Metric charts over steps, drawn with the vendored uPlot (a global from uPlot.iife.min.js).

import { formatNumber, h } from "./dom.js";

const PALETTE = [
  "#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed",
  "#0891b2", "#db2777", "#65a30d", "#475569", "#ea580c",
];

export const colorOf = (index) => PALETTE[index % PALETTE.length];

const HEIGHT = 220;

// The card a chart is drawn into: `div.chart` titled with the metric key.
export function chartCard(metric) {
  return h(
    "figure",
    { class: "chart-card" },
    h("figcaption", null, metric),
    h("div", { class: "chart", dataset: { metric } }),
  );
}

// Draw one line per series into `container` (attached to the page, so it has a width).
// series: [{label, points: [{step, value}]}]. Returns a function that removes the chart.
export function drawChart(container, series) {
  const steps = [...new Set(series.flatMap((s) => s.points.map((p) => p.step)))];
  steps.sort((a, b) => a - b);
  const index = new Map(steps.map((step, i) => [step, i]));
  const columns = series.map((s) => {
    const column = new Array(steps.length).fill(null);
    for (const point of s.points) column[index.get(point.step)] = point.value;
    return column;
  });
  container.dataset.series = String(series.length);
  const axis = { stroke: "#6b7280", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#e5e7eb" } };
  const plot = new window.uPlot(
    {
      width: widthOf(container),
      height: HEIGHT,
      scales: { x: { time: false } },
      axes: [
        { ...axis, label: "step", labelSize: 18 },
        { ...axis, size: 56, values: (u, ticks) => ticks.map(formatNumber) },
      ],
      series: [
        { label: "step" },
        ...series.map((s, i) => ({
          label: s.label,
          stroke: colorOf(i),
          width: 2,
          spanGaps: true,
          value: (u, v) => formatNumber(v),
          points: { show: steps.length <= 40, size: 5 },
        })),
      ],
      legend: { live: true, markers: { width: 0, fill: (u, i) => colorOf(i - 1) } },
      cursor: { drag: { x: true, y: false } },
    },
    [steps, ...columns],
    container,
  );
  const observer = new ResizeObserver(() => {
    const width = widthOf(container);
    if (width !== plot.width) plot.setSize({ width, height: HEIGHT });
  });
  observer.observe(container);
  return () => {
    observer.disconnect();
    plot.destroy();
  };
}

function widthOf(container) {
  return Math.max(240, Math.floor(container.clientWidth));
}
