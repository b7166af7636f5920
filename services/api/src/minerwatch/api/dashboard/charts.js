// History charts with uPlot (vendor/uplot, loaded as the global `uPlot` before the page's
// module). Rows come from /api/miners/{id}/samples or /api/fleet/samples (raw samples or
// 1-minute / 1-hour buckets); live samples extend them. A chart's container carries
// data-chart="<field>" and, once drawn, data-points="<points drawn>" and
// data-gaps="<gaps drawn>", so a test can tell a drawn chart from an empty one.
import { el, isNum, num } from "./common.js";

// The ranges a person picks, and how many items to ask for: step=auto then reads the
// finest resolution that fits (raw for an hour, 1-minute rollups for a day, 1-hour ones
// beyond a few days).
export const RANGES = [
  { key: "1h", label: "1 h", seconds: 3600, limit: 1000 },
  { key: "6h", label: "6 h", seconds: 6 * 3600, limit: 2500 },
  { key: "24h", label: "24 h", seconds: 86400, limit: 1500 },
  { key: "7d", label: "7 d", seconds: 7 * 86400, limit: 1500 },
  { key: "30d", label: "30 d", seconds: 30 * 86400, limit: 1500 },
  { key: "1y", label: "1 y", seconds: 365 * 86400, limit: 10000 },
];

// Consecutive points further apart than this many steps are a gap (the miner or the
// collector was down), drawn as a break in the line, never as a line across it.
export const GAP_STEPS = 3;
const HEIGHT = 190;
const MAX_FANS = 8;
const MEAN = ["hashrate_ths", "power_w", "temp_c", "vr_temp_c"];
const FIELDS = [...MEAN, "expected_hashrate_ths", "efficiency_jth", "shares_accepted", "shares_rejected"];

const value = (v) => (isNum(v) ? v : null);

// One point of history: t in seconds, its step (seconds), n samples in it, the fields, the
// min/max of the mean fields where a rollup has them, the fans.
export function rowOf(item, rawStepS) {
  const t = Date.parse(item.ts) / 1000;
  if (!Number.isFinite(t)) return null;
  const row = { t, step: isNum(item.step_s) && item.step_s > 0 ? item.step_s : rawStepS,
                rollup: isNum(item.step_s) && item.step_s > 0, n: isNum(item.samples) ? item.samples : 1,
                f: {}, min: {}, max: {}, fans: [] };
  for (const key of FIELDS) row.f[key] = value(item[key]);
  for (const key of MEAN) {
    row.min[key] = value(item[`${key}_min`]);
    row.max[key] = value(item[`${key}_max`]);
  }
  if (Array.isArray(item.fan_rpm)) row.fans = item.fan_rpm.slice(0, MAX_FANS).map(value);
  return row;
}

// A live sample into the rows shown: appended when they are raw samples, folded into the
// newest bucket (or a new one) when they are rollups. Rows older than `fromS` leave.
export function addSample(rows, sample, rawStepS, fromS) {
  const fresh = rowOf(sample, rawStepS);
  if (!fresh) return false;
  const last = rows[rows.length - 1];
  if (last && fresh.t <= last.t && !last.rollup) return false; // a replay of one already shown
  if (last && last.rollup) {
    const start = Math.floor(fresh.t / last.step) * last.step;
    if (start < last.t) return false;
    if (start === last.t) {
      fold(last, fresh);
    } else {
      rows.push({ ...fresh, t: start, step: last.step, rollup: true,
                  min: { ...fresh.f }, max: { ...fresh.f } });
    }
  } else {
    rows.push(fresh);
  }
  while (rows.length && rows[0].t < fromS) rows.shift();
  return true;
}

function fold(bucket, sample) {
  const n = bucket.n;
  for (const key of MEAN) {
    const v = sample.f[key];
    if (v === null) continue;
    const mean = bucket.f[key];
    bucket.f[key] = mean === null ? v : (mean * n + v) / (n + 1);
    bucket.min[key] = bucket.min[key] === null ? v : Math.min(bucket.min[key], v);
    bucket.max[key] = bucket.max[key] === null ? v : Math.max(bucket.max[key], v);
  }
  for (const key of ["expected_hashrate_ths", "shares_accepted", "shares_rejected"]) {
    if (sample.f[key] !== null) bucket.f[key] = sample.f[key];
  }
  const { hashrate_ths: rate, power_w: watts } = bucket.f;
  bucket.f.efficiency_jth = rate && watts !== null ? watts / rate : null;
  bucket.fans = sample.fans;
  bucket.n = n + 1;
}

// Shares a minute between consecutive rows, from the counters; none across a gap or a
// restart (a counter that went down).
function shareRate(prev, row, key) {
  if (!prev) return null;
  const a = prev.f[key];
  const b = row.f[key];
  const dt = row.t - prev.t;
  if (a === null || b === null || dt <= 0 || b < a) return null;
  return ((b - a) * 60) / dt;
}

const get = (key) => (row) => row.f[key];
const low = (key) => (row) => row.min[key];
const high = (key) => (row) => row.max[key];

// What each miner chart draws. `bands`: min/max of a series where rollups carry them.
export const MINER_CHARTS = [
  { field: "hashrate_ths", title: "Hashrate", unit: "TH/s", digits: 2,
    series: () => [
      { label: "Hashrate", color: "--chart-1", get: get("hashrate_ths"), low: low("hashrate_ths"), high: high("hashrate_ths") },
      { label: "Expected", color: "--chart-muted", get: get("expected_hashrate_ths"), dash: [6, 4] },
    ] },
  { field: "temp_c", title: "Temperature", unit: "°C", digits: 1,
    series: () => [
      { label: "Chip", color: "--chart-2", get: get("temp_c"), low: low("temp_c"), high: high("temp_c") },
      { label: "VR", color: "--chart-3", get: get("vr_temp_c"), low: low("vr_temp_c"), high: high("vr_temp_c") },
    ] },
  { field: "power_w", title: "Power", unit: "W", digits: 1,
    series: () => [{ label: "Power", color: "--chart-4", get: get("power_w"), low: low("power_w"), high: high("power_w") }] },
  { field: "efficiency_jth", title: "Efficiency", unit: "J/TH", digits: 1,
    series: () => [{ label: "Efficiency", color: "--chart-5", get: get("efficiency_jth") }] },
  { field: "fan_rpm", title: "Fans", unit: "rpm", digits: 0,
    series: (rows) => {
      const count = Math.max(1, ...rows.map((row) => row.fans.length));
      return Array.from({ length: count }, (_, i) => ({
        label: `Fan ${i + 1}`, color: `--chart-${(i % 5) + 1}`, get: (row) => (i < row.fans.length ? row.fans[i] : null) }));
    } },
  { field: "share_rate", title: "Share rate", unit: "shares/min", digits: 2,
    series: () => [
      { label: "Accepted", color: "--chart-1", get: (row, prev) => shareRate(prev, row, "shares_accepted") },
      { label: "Rejected", color: "--chart-2", get: (row, prev) => shareRate(prev, row, "shares_rejected") },
    ] },
];

// The fleet's charts, from FleetBuckets.
export const FLEET_CHARTS = [
  { field: "hashrate_ths", title: "Fleet hashrate", unit: "TH/s", digits: 2,
    series: () => [{ label: "Hashrate", color: "--chart-1", get: get("hashrate_ths") }] },
  { field: "power_w", title: "Fleet power", unit: "W", digits: 0,
    series: () => [{ label: "Power", color: "--chart-4", get: get("power_w") }] },
];

// uPlot's data for `series` over `rows`: x in seconds, then each series and its band's
// max and min; a null point inserted into every series where two rows are a gap apart.
export function chartData(rows, series) {
  const xs = [];
  const columns = series.map(() => []);
  const bands = series.map((s) => (s.low ? [[], []] : null));
  let points = 0;
  let gaps = 0;
  let prev = null;
  for (const row of rows) {
    if (prev && row.t - prev.t > GAP_STEPS * Math.max(row.step, prev.step)) {
      xs.push(prev.t + prev.step);
      columns.forEach((column) => column.push(null));
      bands.forEach((band) => band && (band[0].push(null), band[1].push(null)));
      gaps += 1;
      prev = null; // no rate across a gap
    }
    xs.push(row.t);
    let any = false;
    series.forEach((s, i) => {
      const v = s.get(row, prev);
      columns[i].push(v);
      if (v !== null) any = true;
      if (bands[i]) {
        bands[i][0].push(s.high(row));
        bands[i][1].push(s.low(row));
      }
    });
    if (any) points += 1;
    prev = row;
  }
  const data = [xs];
  series.forEach((_, i) => {
    data.push(columns[i]);
    if (bands[i]) data.push(bands[i][0], bands[i][1]);
  });
  return { data, points, gaps };
}

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";

// One chart in `container`: a title, the plot, "no data" when there is none.
export class Chart {
  constructor(container, spec) {
    this.spec = spec;
    this.container = container;
    this.uplot = null;
    this.shape = "";
    this.from = 0;
    this.to = 0;
    container.classList.add("chart");
    container.dataset.chart = spec.field;
    const head = el("h3", "", spec.title);
    head.append(el("span", "unit", spec.unit));
    this.plot = el("div", "plot");
    this.plot.setAttribute("role", "img");
    this.plot.setAttribute("aria-label", `${spec.title} in ${spec.unit}`);
    this.empty = el("p", "chart-empty", "No data in this range.");
    container.replaceChildren(head, this.plot, this.empty);
    new ResizeObserver(() => {
      if (this.uplot && this.plot.clientWidth > 0) this.uplot.setSize({ width: this.plot.clientWidth, height: HEIGHT });
    }).observe(this.plot);
  }

  options(series) {
    const { digits, unit } = this.spec;
    const axis = { stroke: css("--muted"), grid: { stroke: css("--line"), width: 1 }, ticks: { stroke: css("--line"), width: 1 } };
    const format = (_u, v) => (v == null ? "–" : `${num(v, digits)} ${unit}`);
    const uSeries = [{}];
    const bands = [];
    this.bandSeries = [];
    series.forEach((s) => {
      const color = css(s.color);
      uSeries.push({ label: s.label, stroke: color, width: 1.5, dash: s.dash, value: format,
                     points: { show: false }, spanGaps: false });
      if (s.low) {
        const index = uSeries.length;
        const hidden = { stroke: "transparent", width: 0, points: { show: false }, spanGaps: false, value: format };
        uSeries.push({ ...hidden, label: `${s.label} max` }, { ...hidden, label: `${s.label} min` });
        this.bandSeries.push(index, index + 1);
        bands.push({ series: [index, index + 1], fill: `${color}33` });
      }
    });
    return {
      width: Math.max(200, this.plot.clientWidth),
      height: HEIGHT,
      series: uSeries,
      bands,
      scales: { x: { time: true, range: () => [this.from, this.to] } },
      axes: [{ ...axis }, { ...axis, size: 60 }],
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    };
  }

  // Draws `rows` over [fromS, toS]; the plot is made anew when the series change (a fan more).
  draw(rows, fromS, toS) {
    this.from = fromS;
    this.to = toS;
    const series = this.spec.series(rows);
    const { data, points, gaps } = chartData(rows, series);
    const shape = series.map((s) => `${s.label}${s.low ? "+band" : ""}`).join(",");
    if (!this.uplot || shape !== this.shape) {
      if (this.uplot) this.uplot.destroy();
      this.uplot = new uPlot(this.options(series), data, this.plot); // eslint-disable-line no-undef
      this.shape = shape;
      // A band's edges are no lines of their own: out of the legend.
      const entries = this.uplot.root.querySelectorAll(".u-legend .u-series");
      for (const index of this.bandSeries) if (entries[index]) entries[index].hidden = true;
    } else {
      this.uplot.setData(data);
    }
    this.container.dataset.points = String(points);
    this.container.dataset.gaps = String(gaps);
    this.empty.hidden = points > 0;
  }
}

// The range picker: buttons with aria-pressed, one pressed.
export function rangePicker(node, current, onPick) {
  node.setAttribute("role", "group");
  node.setAttribute("aria-label", "Time range");
  const buttons = RANGES.map((range) => {
    const b = el("button", "range", range.label);
    b.type = "button";
    b.dataset.range = range.key;
    b.setAttribute("aria-pressed", String(range.key === current));
    b.addEventListener("click", () => {
      buttons.forEach((other) => other.setAttribute("aria-pressed", String(other === b)));
      onPick(range);
    });
    return b;
  });
  node.replaceChildren(...buttons);
  return RANGES.find((range) => range.key === current) || RANGES[2];
}
