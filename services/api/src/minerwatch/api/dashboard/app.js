// minerwatch fleet page, /: the fleet from GET /api/miners, then live over WS /ws; fleet
// totals that say what they cover, the fleet's history (GET /api/fleet/samples) and its
// daily energy (GET /api/energy).
//
// The page never shows a dead number as live: a miner is "Stale" while the collector is
// not online, or while its latest sample is older than the api's stale_after_s (checked
// every second, not only when a message comes); stale and offline miners are listed apart
// and left out of the fleet totals. A banner says which minerwatch service is offline.
//
// Messages only update the model and mark miners as changed (O(1), no DOM); the DOM is
// updated once per animation frame, only for the miners that changed, and only the cells
// whose text changed, so a fleet of a thousand miners sending a thousand samples a second
// stays responsive (bench/dashboard.py). Rows off screen cost no style or paint
// (content-visibility in style.css), and only rows on screen flash. Nothing costs O(fleet)
// per frame: the totals are running sums moved by each changed miner, and the once-a-second
// tick writes "last seen" only in the rows on screen (the others when they come on screen).
import {
  AlertList, Live, age, capitalized, clock, el, flash, getJson, hashrate, isNum, isObject,
  lastSeen, minerState, newer, notLiveReason, notify, num, power, send, tsMs,
} from "./common.js";
import { Chart, FLEET_CHARTS, RANGES, rangePicker, rowOf } from "./charts.js";

const TICK_MS = 1000;
const HISTORY_EVERY_MS = 60000;
const ENERGY_EVERY_MS = 600000;
const MAX_STATS = 500000;
// Past this many new readings in one frame, none flashes: a wall of flashing rows says
// nothing and costs a repaint of each.
const MAX_FLASHES = 40;
// From this many miners on, rows off screen skip rendering (content-visibility, style.css).
const MANY_ROWS = 100;

const fleet = new Map(); // miner_id -> {info, status, sample, renamed, editing, shown, state, row, onScreen}
const cellsOf = new WeakMap(); // row -> {field: td}, so an update never queries the DOM
const partsOf = new WeakMap(); // td -> {text, unit, sub, key}: the nodes a value is written into
const collator = new Intl.Collator();
const dirty = new Map(); // miner_id -> whether a new reading came (flash it)
let frame = 0;
let reorder = false; // rows must be placed again (new miner, new label or state, new sort)
let alertsDirty = false;
let totalsDirty = false;
const view = { search: "", filter: "all", sort: "name" };
const params = new URLSearchParams(location.search);
let range = RANGES.find((r) => r.key === params.get("range")) || RANGES[2];
let historySeq = 0;
const charts = [];

// ?stats=1: how long each live sample took from its ts (the publisher's clock, the same
// machine's in a benchmark) to being on the page, for bench/dashboard.py.
const stats = params.get("stats") === "1" ? { latencies: [], samples: 0, frames: 0 } : null;
const pendingStats = [];
if (stats) window.minerwatchStats = stats;

const live = new Live({
  filters: ["miners/+/+", "alerts/+/+", "mutes/+"],
  onTopic,
  onService: () => {
    const nowMs = Date.now();
    for (const [minerId, miner] of fleet) renderState(minerId, miner, nowMs);
    renderTotals();
  },
});
const alertList = new AlertList({
  list: document.getElementById("alert-list"),
  section: document.getElementById("alerts"),
  count: document.getElementById("total-alerts"),
  labelOf,
});

// The name a person reads: the label (a rename just saved wins until the info has it).
function labelOf(minerId) {
  const miner = fleet.get(minerId);
  if (!miner) return null;
  if (miner.renamed !== undefined) return miner.renamed || minerId;
  return (miner.info && miner.info.label) || minerId;
}

const isLive = (state) => state === "online" || state === "idle";

// ---- one miner row ------------------------------------------------------------------------

const FIELDS = ["name", "model", "state", "hashrate", "temp", "power", "efficiency", "fans", "shares", "updated", "actions"];
const HEADINGS = ["Miner", "Model", "State", "Hashrate", "Temp", "Power", "Efficiency", "Fans", "Shares", "Last seen", ""];
const NUMERIC = new Set(["hashrate", "temp", "power", "efficiency", "shares", "updated"]);
const METRICS = new Set(["hashrate", "temp", "power", "efficiency", "fans", "shares"]);

function minerRow(minerId) {
  const row = el("tr");
  row.dataset.miner = minerId;
  row.setAttribute("role", "row"); // the table semantics a grid or card layout would drop
  const cells = {};
  FIELDS.forEach((field, i) => {
    const classes = [NUMERIC.has(field) ? "num" : "", METRICS.has(field) ? "metric" : ""];
    const node = el("td", classes.join(" ").trim());
    node.dataset.field = field;
    node.dataset.label = HEADINGS[i]; // the card layout (phones) names each value
    node.setAttribute("role", "cell");
    cells[field] = node;
    row.append(node);
  });
  cellsOf.set(row, cells);
  cells.actions.append(rowMenu(minerId));
  // Whether the row is rendered (on screen or near it): the browser says so for free with
  // content-visibility: auto, with no layout read of ours.
  row.addEventListener("contentvisibilityautostatechange", (event) => {
    const miner = fleet.get(minerId);
    if (!miner || miner.row !== row) return;
    miner.onScreen = !event.skipped;
    if (miner.onScreen) renderSeen(miner); // its "last seen" was left while off screen
  });
  return row;
}

function cell(row, field) {
  return cellsOf.get(row)[field];
}

// "value unit" with an optional line below, written in place: only the text that changed
// is touched, and no node is created once the cell has its three.
function writeCell(node, value, unit, sub, subClass) {
  const shownUnit = unit && value !== "–" ? unit : "";
  const key = `${value}\u0000${shownUnit}\u0000${sub || ""}\u0000${subClass || ""}`;
  let parts = partsOf.get(node);
  if (parts && parts.key === key) return;
  if (!parts) {
    parts = { text: document.createTextNode(""), unit: el("span", "unit"), sub: el("span", "sub"), key: "" };
    node.replaceChildren(parts.text, parts.unit, parts.sub);
    partsOf.set(node, parts);
  }
  parts.key = key;
  if (parts.text.data !== value) parts.text.data = value;
  if (parts.unit.textContent !== shownUnit) parts.unit.textContent = shownUnit;
  if (parts.unit.hidden !== !shownUnit) parts.unit.hidden = !shownUnit;
  const subText = sub || "";
  if (parts.sub.textContent !== subText) parts.sub.textContent = subText;
  const className = subClass || "sub";
  if (parts.sub.className !== className) parts.sub.className = className;
  if (parts.sub.hidden !== !subText) parts.sub.hidden = !subText;
}

// A small per-row menu: rename, forget.
function rowMenu(minerId) {
  const menu = el("details", "menu");
  const summary = el("summary", "", "⋯");
  summary.title = "Rename or forget this miner";
  summary.setAttribute("aria-label", `Actions for ${minerId}`);
  const items = el("div", "menu-items");
  const item = (text, className, onClick) => {
    const node = el("button", className, text);
    node.type = "button";
    node.addEventListener("click", onClick);
    return node;
  };
  items.append(
    item("Rename…", "", () => { menu.open = false; startRename(minerId); }),
    item("Forget…", "danger", () => { menu.open = false; forget(minerId); }),
  );
  menu.append(summary, items);
  return menu;
}

function renderName(minerId, miner, force) {
  if (miner.editing) return; // the rename form is there
  const { info } = miner;
  const name = cell(miner.row, "name");
  const label = labelOf(minerId);
  const hostname = info && info.hostname !== minerId && info.hostname !== label ? info.hostname : null;
  const where = info ? [hostname, `${info.host}:${info.port}`].filter(Boolean).join(" · ") : "";
  const key = `${label}\u0000${where}`;
  if (!force && miner.named === key) return;
  miner.named = key;
  const link = el("a", "name", label);
  link.href = `/miners/${encodeURIComponent(minerId)}`;
  name.replaceChildren(link);
  if (label !== minerId) name.append(" ", el("span", "id", minerId));
  if (where) name.append(el("span", "sub", where));
}

// "Bitaxe Gamma 601", but "NerdQAxe++ BM1370" where the model already names the make.
function makeAndModel(info) {
  const { make, model } = info;
  if (make && model && model.toLowerCase().startsWith(make.toLowerCase())) return model;
  return [make, model].filter(Boolean).join(" ");
}

function renderMiner(minerId, miner, fresh, nowMs) {
  const { info, sample, row } = miner;
  renderName(minerId, miner);
  const maker = info ? makeAndModel(info) : "";
  writeCell(cell(row, "model"), maker || "–", "", info && info.firmware ? `fw ${info.firmware}` : "");

  const s = sample || {};
  const [rate, rateUnit] = hashrate(s.hashrate_ths);
  writeCell(cell(row, "hashrate"), rate, rateUnit);
  writeCell(cell(row, "temp"), isNum(s.temp_c) ? num(s.temp_c, 1) : "–", "°C",
            isNum(s.vr_temp_c) ? `VR ${num(s.vr_temp_c, 0)} °C` : "");
  writeCell(cell(row, "power"), isNum(s.power_w) ? num(s.power_w, 0) : "–", "W");
  writeCell(cell(row, "efficiency"), isNum(s.efficiency_jth) ? num(s.efficiency_jth, 1) : "–", "J/TH");
  const fans = Array.isArray(s.fan_rpm) ? s.fan_rpm.filter(isNum) : [];
  writeCell(cell(row, "fans"), fans.length ? fans.map((rpm) => num(rpm, 0)).join(" · ") : "–", "rpm");
  writeCell(cell(row, "shares"), isNum(s.shares_accepted) ? num(s.shares_accepted, 0) : "–", "",
            isNum(s.shares_rejected) ? `${num(s.shares_rejected, 0)} rejected` : "",
            isNum(s.shares_rejected) && s.shares_rejected > 0 ? "sub rejected" : "sub");
  renderState(minerId, miner, nowMs); // redraws only when what it shows changed
  return fresh && miner.onScreen;
}

// "Last seen", written only when its text changed; a row off screen is left until it
// comes on screen (its contentvisibilityautostatechange), so the once-a-second tick
// touches only the rows a person can see.
function renderSeen(miner) {
  const seen = lastSeen(miner.status, miner.sample);
  const seenText = age(seen);
  if (miner.seenText === seenText && miner.seen === seen) return;
  const updated = cell(miner.row, "updated");
  if (miner.seenText !== seenText) updated.textContent = seenText;
  if (miner.seen !== seen) updated.title = seen || "";
  miner.seenText = seenText;
  miner.seen = seen;
}

// The state cell and the row's look: checked every tick, as time alone makes a miner
// stale, but redrawn only when what it shows changed. True when the state changed (the
// totals follow it).
function renderState(minerId, miner, nowMs) {
  const { status, sample, row } = miner;
  const collector = live.collector();
  const { state, since } = minerState(status, sample, collector, nowMs, live.staleAfterS);
  if (miner.onScreen) renderSeen(miner);

  const key = `${state}|${since}|${status ? status.reason : ""}|${collector}`;
  if (miner.shown === key) return false;
  const changed = !miner.shown || miner.state !== state;
  if (isLive(state) !== isLive(miner.state)) reorder = true; // to the other group
  miner.shown = key;
  miner.state = state;
  row.dataset.state = state;
  row.classList.toggle("not-live", !isLive(state));
  cell(row, "updated").classList.toggle("old", !isLive(state));

  const badge = el("span", `state state-${state}`, capitalized(state));
  const stateCell = cell(row, "state");
  stateCell.replaceChildren(badge);
  if (state === "stale" || state === "offline") {
    const why = notLiveReason(state, status, collector);
    if (why) badge.title = why;
    stateCell.append(el("span", "sub", `since ${clock(since)}`));
    if (state === "offline" && status && status.reason) stateCell.append(el("span", "sub reason", status.reason));
  } else if (status && status.reason) {
    badge.title = status.reason;
  }
  if (!miner.counted || miner.counted.state !== state) count(miner);
  return changed;
}

// ---- rename and forget --------------------------------------------------------------------

function startRename(minerId) {
  const miner = fleet.get(minerId);
  if (!miner || miner.editing) return;
  miner.editing = true;
  const name = cell(miner.row, "name");
  const form = el("form", "rename");
  const input = el("input");
  input.name = "label";
  input.maxLength = 100;
  input.value = labelOf(minerId) === minerId ? "" : labelOf(minerId);
  input.placeholder = minerId;
  input.setAttribute("aria-label", `Label of ${minerId}`);
  const problem = el("span", "sub error");
  problem.setAttribute("role", "alert");
  const cancel = () => {
    miner.editing = false;
    renderName(minerId, miner, true);
  };
  const cancelButton = el("button", "quiet", "Cancel");
  cancelButton.type = "button";
  cancelButton.addEventListener("click", cancel);
  form.append(input, el("button", "", "Save"), cancelButton, problem);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const label = input.value.trim() || null; // empty: back to the id
    try {
      const answer = await send("PATCH", `/api/miners/${encodeURIComponent(minerId)}`, { label });
      const current = fleet.get(minerId);
      if (!current) return; // forgotten meanwhile
      current.renamed = answer && "label" in answer ? answer.label : label;
      cancel();
      reorder = true;
      alertsDirty = true;
      schedule();
    } catch (error) {
      problem.textContent = `Not renamed: ${error.message}`;
    }
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") cancel();
  });
  name.replaceChildren(form);
  input.focus();
}

async function forget(minerId) {
  const label = labelOf(minerId) || minerId;
  const who = label === minerId ? minerId : `${label} (${minerId})`;
  const question = `Forget ${who}?\n\nIts live state is cleared and it leaves the dashboard; `
    + "its history is kept. If it answers the collector again, it comes back.";
  if (!window.confirm(question)) return;
  try {
    await send("DELETE", `/api/miners/${encodeURIComponent(minerId)}`);
    removeMiner(minerId); // the cleared topics arrive over the WebSocket too
    notify(`Forgot ${who}.`);
  } catch (error) {
    notify(`Could not forget ${who}: ${error.message}`);
  }
}

// ---- fleet state --------------------------------------------------------------------------

function minerEntry(minerId) {
  let miner = fleet.get(minerId);
  if (!miner) {
    miner = { info: null, status: null, sample: null, renamed: undefined, editing: false,
              shown: null, named: null, state: "unknown", row: minerRow(minerId), onScreen: true,
              seen: undefined, seenText: undefined, counted: null };
    fleet.set(minerId, miner);
    reorder = true;
  }
  return miner;
}

// Miners removed while a GET /api/miners is in flight: its answer was taken before, and
// must not bring them back.
let removedDuringSnapshot = null;

function removeMiner(minerId) {
  if (removedDuringSnapshot) removedDuringSnapshot.add(minerId);
  const miner = fleet.get(minerId);
  if (!miner) return;
  miner.row.remove();
  addShare(miner.counted, -1);
  fleet.delete(minerId);
  dirty.delete(minerId);
  reorder = true;
  totalsDirty = true;
  alertsDirty = true;
  schedule();
}

function update(minerId, kind, value, viaSocket) {
  if (kind !== "sample" && kind !== "status" && kind !== "info") return; // label: read from info
  const present = isObject(value);
  if (!present && !fleet.has(minerId)) return; // a cleared topic of a miner not shown
  const miner = minerEntry(minerId);
  let fresh = false;
  if (kind === "sample") {
    if (present && !newer(miner.sample, value, "ts")) return;
    // Highlight a new reading, not the first one shown nor a replay of the same one.
    fresh = present && miner.sample !== null && miner.sample.ts !== value.ts;
    miner.sample = present ? value : null;
    if (stats && viaSocket && present) pendingStats.push(tsMs(value.ts));
  } else if (kind === "status") {
    if (present && !newer(miner.status, value, "since")) return;
    miner.status = present ? value : null;
  } else {
    const before = labelOf(minerId);
    miner.info = present ? value : null;
    // The collector folded the new label in: the info is the truth again.
    if (present && miner.renamed !== undefined && (value.label || null) === miner.renamed) miner.renamed = undefined;
    if (labelOf(minerId) !== before) reorder = true;
    alertsDirty = true; // the label shown with its alerts
  }
  if (!miner.info && !miner.status && !miner.sample) {
    removeMiner(minerId); // forgotten: every retained topic of it was cleared
    return;
  }
  dirty.set(minerId, (dirty.get(minerId) || false) || fresh);
  schedule();
}

function schedule() {
  if (!frame) frame = requestAnimationFrame(flush);
}

// Everything the messages since the last frame changed, drawn at once.
function flush() {
  frame = 0;
  const nowMs = Date.now();
  const flashes = [];
  for (const [minerId, fresh] of dirty) {
    const miner = fleet.get(minerId);
    if (!miner) continue;
    if (renderMiner(minerId, miner, fresh, nowMs)) flashes.push(miner.row);
    count(miner); // its sample may have changed
    applyView(minerId, miner);
  }
  dirty.clear();
  if (flashes.length <= MAX_FLASHES) for (const row of flashes) flash(cell(row, "hashrate"));
  if (reorder) placeRows();
  if (totalsDirty) renderTotals();
  if (alertsDirty) {
    alertsDirty = false;
    alertList.render();
  }
  if (stats) {
    stats.frames += 1;
    const done = Date.now();
    for (const t of pendingStats) if (stats.latencies.length < MAX_STATS) stats.latencies.push(done - t);
    stats.samples += pendingStats.length;
    pendingStats.length = 0;
  }
}

// ---- sort, filter, search -----------------------------------------------------------------

const SORTS = {
  hashrate: (m) => (m.sample && isNum(m.sample.hashrate_ths) ? m.sample.hashrate_ths : null),
  temp: (m) => (m.sample && isNum(m.sample.temp_c) ? m.sample.temp_c : null),
  power: (m) => (m.sample && isNum(m.sample.power_w) ? m.sample.power_w : null),
  efficiency: (m) => (m.sample && isNum(m.sample.efficiency_jth) ? -m.sample.efficiency_jth : null),
  seen: (m) => {
    const ms = tsMs(lastSeen(m.status, m.sample));
    return Number.isNaN(ms) ? null : ms;
  },
};

// Rows by the sort picked (highest first; efficiency best first), then by the name a
// person reads, then by id.
function compare(a, b) {
  const value = SORTS[view.sort];
  if (value) {
    const va = value(fleet.get(a));
    const vb = value(fleet.get(b));
    if (va !== vb) {
      if (va === null) return 1;
      if (vb === null) return -1;
      return vb - va;
    }
  }
  const byLabel = collator.compare((labelOf(a) || a).toLocaleLowerCase(), (labelOf(b) || b).toLocaleLowerCase());
  return byLabel || (a < b ? -1 : a > b ? 1 : 0);
}

// Live miners first; stale, offline and unknown ones in a group of their own below.
function placeRows() {
  reorder = false;
  const ids = [...fleet.keys()].sort(compare);
  const liveBody = document.getElementById("miner-rows");
  const downBody = document.getElementById("down-rows");
  const groups = [[liveBody, ids.filter((id) => isLive(fleet.get(id).state))],
                  [downBody, ids.filter((id) => !isLive(fleet.get(id).state))]];
  for (const [body, members] of groups) {
    let at = body.firstElementChild;
    for (const id of members) {
      const row = fleet.get(id).row;
      if (row === at) {
        at = at.nextElementSibling;
      } else {
        body.insertBefore(row, at);
      }
    }
  }
  const down = groups[1][1].length;
  document.getElementById("down-head").hidden = down === 0;
  document.getElementById("down-title").textContent = `Not live: ${down} stale, offline or not heard from`;
  document.getElementById("empty").hidden = fleet.size > 0;
  document.getElementById("miners").classList.toggle("many", fleet.size > MANY_ROWS);
  applyAllViews();
}

function matches(minerId, miner) {
  if (view.filter === "live" && !isLive(miner.state)) return false;
  if (view.filter === "down" && isLive(miner.state)) return false;
  if (view.filter === "alerts" && !alertList.firing().some((a) => a.miner_id === minerId)) return false;
  if (!view.search) return true;
  const { info } = miner;
  const haystack = [labelOf(minerId), minerId, info && info.hostname, info && info.host, info && info.make,
                    info && info.model, info && info.firmware, miner.state].filter(Boolean).join(" ").toLocaleLowerCase();
  return view.search.split(/\s+/).every((word) => haystack.includes(word));
}

function applyView(minerId, miner) {
  const hidden = !matches(minerId, miner);
  if (miner.row.hidden !== hidden) miner.row.hidden = hidden;
}

function applyAllViews() {
  let shown = 0;
  for (const [minerId, miner] of fleet) {
    applyView(minerId, miner);
    if (!miner.row.hidden) shown += 1;
  }
  document.getElementById("none-match").hidden = shown > 0 || fleet.size === 0;
}

function setupTools() {
  // Enter in the search box filters, as typing does; it never submits the page away.
  document.getElementById("tools").addEventListener("submit", (event) => event.preventDefault());
  const search = document.getElementById("search");
  const filter = document.getElementById("filter");
  const sort = document.getElementById("sort");
  search.value = params.get("q") || "";
  filter.value = params.get("show") || "all";
  sort.value = params.get("sort") || "name";
  const apply = () => {
    view.search = search.value.trim().toLocaleLowerCase();
    view.filter = filter.value || "all";
    view.sort = sort.value || "name";
    const url = new URL(location.href);
    for (const [key, value, fallback] of [["q", search.value.trim(), ""], ["show", view.filter, "all"], ["sort", view.sort, "name"]]) {
      if (value && value !== fallback) url.searchParams.set(key, value);
      else url.searchParams.delete(key);
    }
    history.replaceState(null, "", url);
    placeRows();
  };
  search.addEventListener("input", apply);
  filter.addEventListener("change", apply);
  sort.addEventListener("change", apply);
  view.search = search.value.trim().toLocaleLowerCase();
  view.filter = filter.value;
  view.sort = sort.value;
}

// ---- totals, and what they cover ----------------------------------------------------------

const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

// Running totals: each miner's share is kept, and a change of one miner moves the totals
// by the difference, so a frame costs O(miners changed), not O(fleet).
const EMPTY_COUNTS = { online: 0, idle: 0, offline: 0, stale: 0, unknown: 0 };
const totals = { counts: { ...EMPTY_COUNTS }, live: 0, rate: 0, watts: 0, reporting: 0, ratedPower: 0, ratedRate: 0, rated: 0 };

// What one miner adds to the totals. Only what the fleet does now: not the last values of
// stale or offline miners.
function shareOf(miner) {
  const share = { state: miner.state, live: 0, rate: 0, watts: 0, reporting: 0, ratedPower: 0, ratedRate: 0, rated: 0 };
  const s = miner.sample;
  if (!isLive(miner.state) || !s) return share;
  share.live = 1;
  if (isNum(s.hashrate_ths)) share.rate = s.hashrate_ths;
  if (isNum(s.power_w)) {
    share.watts = s.power_w;
    share.reporting = 1;
  }
  if (isNum(s.power_w) && isNum(s.hashrate_ths) && s.hashrate_ths > 0) {
    share.ratedPower = s.power_w;
    share.ratedRate = s.hashrate_ths;
    share.rated = 1;
  }
  return share;
}

function addShare(share, sign) {
  if (!share) return;
  totals.counts[share.state] = (totals.counts[share.state] || 0) + sign;
  for (const key of ["live", "rate", "watts", "reporting", "ratedPower", "ratedRate", "rated"]) totals[key] += sign * share[key];
}

function count(miner) {
  addShare(miner.counted, -1);
  miner.counted = shareOf(miner);
  addShare(miner.counted, 1);
  totalsDirty = true;
}

// The totals summed afresh (once a second, in tick), so float rounding of the running
// sums never builds up.
function recountAll() {
  totals.counts = { ...EMPTY_COUNTS };
  for (const key of ["live", "rate", "watts", "reporting", "ratedPower", "ratedRate", "rated"]) totals[key] = 0;
  for (const miner of fleet.values()) {
    miner.counted = shareOf(miner);
    addShare(miner.counted, 1);
  }
}

function renderTotals() {
  totalsDirty = false;
  const { counts, rate, watts, reporting, ratedPower, ratedRate, rated } = totals;
  const liveCount = totals.live;
  const count = document.getElementById("total-online");
  const countKey = `${counts.online}/${fleet.size}/${counts.stale}`;
  if (count.dataset.shown !== countKey) {
    count.dataset.shown = countKey;
    count.replaceChildren(document.createTextNode(`${counts.online} / ${fleet.size}`),
                          el("span", "detail", counts.stale ? " online · " : " online"));
    if (counts.stale) count.append(el("span", "detail stale-count", `${counts.stale} stale`));
  }
  const others = [["idle", counts.idle], ["offline", counts.offline], ["not heard from", counts.unknown]]
    .filter(([, n]) => n > 0).map(([what, n]) => `${n} ${what}`);
  setText("cover-miners", others.join(" · "));

  const [value, unit] = hashrate(rate);
  writeCell(document.getElementById("total-hashrate"), value, unit);
  const left = fleet.size - liveCount;
  setText("cover-hashrate", `from ${plural(liveCount, "live miner", "live miners")}`
    + (left ? `; ${left} not live left out` : ""));
  const totalPower = power(watts);
  writeCell(document.getElementById("total-power"), totalPower[0], totalPower[1]);
  setText("cover-power", liveCount
    ? `${reporting} of ${plural(liveCount, "live miner", "live miners")} ${reporting === 1 ? "reports" : "report"} it`
    : "no live miner");
  writeCell(document.getElementById("total-efficiency"), ratedRate > 0 ? num(ratedPower / ratedRate, 1) : "–", "J/TH");
  setText("cover-efficiency", rated
    ? `over the ${plural(rated, "miner", "miners")} that ${rated === 1 ? "reports" : "report"} power`
    : "no live miner reports power");
}

function setText(id, text) {
  const node = document.getElementById(id);
  if (node.textContent !== text) node.textContent = text;
}

// ---- fleet history ------------------------------------------------------------------------

async function loadHistory() {
  const seq = ++historySeq;
  const since = new Date(Date.now() - range.seconds * 1000).toISOString();
  const query = new URLSearchParams({ since, step: "auto", limit: String(range.limit) });
  const status = document.getElementById("resolution");
  let items;
  try {
    items = await getJson(`/api/fleet/samples?${query}`);
  } catch (error) {
    if (seq === historySeq) status.textContent = `Fleet history not available: ${error.message}`;
    return;
  }
  if (seq !== historySeq) return;
  const rows = [];
  let last = null;
  for (const item of Array.isArray(items) ? items : []) {
    const row = isObject(item) ? rowOf(item, live.pollIntervalS) : null;
    if (row) {
      rows.push(row);
      last = item;
    }
  }
  const toS = Date.now() / 1000;
  for (const chart of charts) chart.draw(rows, toS - range.seconds, toS);
  const step = rows.length && rows[0].rollup ? (rows[0].step === 60 ? "1-minute" : rows[0].step === 3600 ? "1-hour" : `${rows[0].step}-s`) + " buckets" : "raw";
  const cover = last && isNum(last.miners)
    ? ` · latest: hashrate of ${last.hashrate_miners ?? last.miners}, power of ${last.power_miners ?? 0} of ${last.miners} miners` : "";
  status.textContent = rows.length ? `${step}${cover}` : "no history in this range";
}

// ---- energy -------------------------------------------------------------------------------

async function loadEnergy() {
  let energy;
  try {
    energy = await getJson("/api/energy");
  } catch (error) {
    document.getElementById("energy-note").textContent = `Energy not available: ${error.message}`;
    return;
  }
  if (!isObject(energy) || !Array.isArray(energy.days)) return;
  const price = isNum(energy.price_per_kwh) ? energy.price_per_kwh : null;
  const currency = typeof energy.currency === "string" ? energy.currency : "";
  const money = (value) => (isNum(value) ? `${num(value, 2)}${currency ? ` ${currency}` : ""}` : "–");
  document.getElementById("energy-note").textContent = (price === null
    ? "From the hourly power of the miners that report it. Set [api] energy_price_per_kwh for costs."
    : `From the hourly power of the miners that report it, at ${num(price, 4)}${currency ? ` ${currency}` : ""} per kWh.`);

  const days = [...energy.days].filter(isObject).reverse(); // newest first
  const dayRows = days.map((day) => {
    const row = el("tr");
    row.dataset.day = day.day;
    row.append(el("td", "", String(day.day)), el("td", "num", isNum(day.kwh) ? num(day.kwh, 2) : "–"),
               el("td", "num", money(day.cost)), el("td", "num", isNum(day.miners_reporting) ? String(day.miners_reporting) : "–"));
    return row;
  });
  document.querySelector("#energy-days tbody").replaceChildren(...dayRows);

  const perMiner = new Map();
  for (const day of energy.days) {
    if (!isObject(day) || !isObject(day.miners)) continue;
    for (const [minerId, kwh] of Object.entries(day.miners)) {
      if (!isNum(kwh)) continue;
      const entry = perMiner.get(minerId) || { total: 0, today: null };
      entry.total += kwh;
      if (day === energy.days[energy.days.length - 1]) entry.today = kwh;
      perMiner.set(minerId, entry);
    }
  }
  document.getElementById("energy-period").textContent = `${energy.days.length} days`;
  const minerRows = [...perMiner.keys()].sort((a, b) => (labelOf(a) || a).localeCompare(labelOf(b) || b)).map((minerId) => {
    const { total, today } = perMiner.get(minerId);
    const row = el("tr");
    row.dataset.energyMiner = minerId;
    const name = el("td");
    const link = el("a", "", labelOf(minerId) || minerId);
    link.href = `/miners/${encodeURIComponent(minerId)}`;
    name.append(link);
    row.append(name, el("td", "num", isNum(today) ? num(today, 2) : "–"), el("td", "num", num(total, 2)),
               el("td", "num", price === null ? "–" : money(total * price)));
    return row;
  });
  document.querySelector("#energy-miners tbody").replaceChildren(...minerRows);
}

// ---- data sources -------------------------------------------------------------------------

async function loadSnapshot() {
  removedDuringSnapshot = new Set();
  try {
    const entries = await getJson("/api/miners");
    const removed = removedDuringSnapshot;
    removedDuringSnapshot = null;
    for (const entry of entries) {
      if (!isObject(entry) || typeof entry.miner_id !== "string") continue;
      if (removed.has(entry.miner_id)) continue; // cleared over the WebSocket meanwhile
      if (entry.info) update(entry.miner_id, "info", entry.info, false);
      if (entry.status) update(entry.miner_id, "status", entry.status, false);
      if (entry.sample) update(entry.miner_id, "sample", entry.sample, false);
      for (const alert of Array.isArray(entry.alerts) ? entry.alerts : []) {
        if (isObject(alert)) alertList.update(`${live.base}/alerts/${entry.miner_id}/${alert.rule}`, alert);
      }
    }
  } catch (error) {
    removedDuringSnapshot = null;
    console.warn("minerwatch: could not load /api/miners:", error);
  }
  flush();
}

function onTopic(levels, payload, topic) {
  if (levels.length === 3 && levels[0] === "miners") {
    update(levels[1], levels[2], payload, true);
  } else if (levels.length === 3 && levels[0] === "alerts") {
    alertList.update(topic, payload);
    if (view.filter === "alerts") applyAllViews();
  } else if (levels.length === 2 && levels[0] === "mutes") {
    alertList.updateMute(levels[1], payload);
  }
}

// Every second: time alone makes a miner stale and a mute expire; a sort by a reading
// follows the readings (at this pace, not at every sample).
function tick() {
  const nowMs = Date.now();
  for (const [minerId, miner] of fleet) renderState(minerId, miner, nowMs);
  recountAll();
  if (view.sort !== "name" || reorder) placeRows();
  renderTotals();
  if (alertList.alerts.size) alertList.render();
}

async function start() {
  setupTools();
  for (const spec of FLEET_CHARTS) {
    charts.push(new Chart(document.querySelector(`[data-chart="${spec.field}"]`), spec));
  }
  range = rangePicker(document.getElementById("ranges"), range.key, (picked) => {
    range = picked;
    const url = new URL(location.href);
    url.searchParams.set("range", picked.key);
    history.replaceState(null, "", url);
    loadHistory();
  });
  await live.configure();
  // Subscribed first, then the list: a miner the api learns of after the list was taken
  // comes live over the WebSocket. The rows come from the list, not from the replay (the
  // relay cuts a replay to the client's backlog, 1,000 frames, and a fleet has 3 a miner).
  live.connect();
  await loadSnapshot();
  setInterval(tick, TICK_MS);
  loadHistory();
  loadEnergy();
  setInterval(loadHistory, HISTORY_EVERY_MS);
  setInterval(loadEnergy, ENERGY_EVERY_MS);
}

document.addEventListener("click", (event) => {
  // An open row menu closes when a click lands anywhere else.
  for (const menu of document.querySelectorAll("details.menu[open]")) {
    if (!menu.contains(event.target)) menu.open = false;
  }
});

start();
