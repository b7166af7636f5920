// minerwatch miner page, /miners/{miner_id} (or /miner.html?id=...): who the miner is,
// whether it is live and since when, its history as charts over a picked range (from
// /api/miners/{id}/samples?step=auto, extended live over WS /ws), its firing alerts with
// mute, its events as a timeline (status changes, alerts, and the commands people and
// services gave it: who did what, and how it ended), and the Control section (control.js).
import {
  AlertList, Live, age, capitalized, clock, duration, el, getJson, hashrate, isNum, isObject,
  lastSeen, minerState, newer, notLiveReason, num, power, setValue, tsMs,
} from "./common.js";
import { Chart, MINER_CHARTS, RANGES, addSample, rangePicker, rowOf } from "./charts.js";
import { ACTIONS, Control, describeChanges } from "./control.js";

const TICK_MS = 1000;
const EVENTS_LIMIT = 100;

// The id from /miners/{id}, else from ?id= (the page is also /miner.html).
function pageMinerId() {
  const match = location.pathname.match(/^\/miners\/([^/]+)\/?$/);
  if (match) return decodeURIComponent(match[1]);
  return new URLSearchParams(location.search).get("id") || "";
}

const minerId = pageMinerId();
const params = new URLSearchParams(location.search);
const miner = { info: null, status: null, sample: null, known: false };
const rows = [];
let range = RANGES.find((r) => r.key === params.get("range")) || RANGES[2];
let loadSeq = 0;
let loading = false;
let foldedUpToMs = 0; // live samples up to this moment are already in the rows
const charts = [];
const events = [];

const live = new Live({
  // miners/{id}/+ has the retained autotune progress (…/tune) too; command results are
  // not retained: they come live only, the older ones from the events api.
  filters: [`miners/${minerId}/+`, `miners/${minerId}/command/result`, `alerts/${minerId}/+`, "mutes/+"],
  onTopic,
  onService: () => {
    renderState();
    control.tick(); // a run of a collector that went offline is no longer live
  },
});
const alertList = new AlertList({
  list: document.getElementById("alert-list"),
  section: document.getElementById("alerts"),
  labelOf: () => labelOf(),
  only: minerId,
});

const labelOf = () => (miner.info && miner.info.label) || minerId;

const control = new Control({
  minerId,
  live,
  onCommand: (result) => addEvent(commandEvent(result)),
  stateOf: () => document.getElementById("miner-state").dataset.state || "unknown",
});

// ---- identity, state, latest reading ------------------------------------------------------

function fact(name, text) {
  const node = document.querySelector(`[data-fact="${name}"]`);
  node.replaceChildren(document.createTextNode(text || "–"));
  return node;
}

// The miner's own web page: AxeOS serves it on the port minerwatch polls; the CGMiner
// family answers its API on 4028 and has its web page on port 80.
function webPage(info) {
  const host = info.host.includes(":") ? `[${info.host}]` : info.host;
  const port = info.driver === "axeos" && info.port && info.port !== 80 ? `:${info.port}` : "";
  return `http://${host}${port}/`;
}

function renderIdentity() {
  const { info } = miner;
  const label = labelOf();
  document.getElementById("miner-name").textContent = label;
  document.getElementById("miner-id").textContent = label !== minerId ? minerId : "";
  document.title = `${label} · minerwatch`;
  fact("make", info && info.make);
  fact("model", info && info.model);
  fact("firmware", info && info.firmware);
  fact("mac", info && info.mac);
  const address = fact("address", info ? `${info.host}:${info.port}` : "");
  if (info && info.host) {
    const link = el("a", "", `${info.host}:${info.port}`);
    link.href = webPage(info);
    link.rel = "noopener noreferrer";
    link.title = "The miner's own web page";
    address.replaceChildren(link);
    if (info.hostname && info.hostname !== minerId) address.append(el("span", "sub", info.hostname));
  }
}

function renderNow() {
  const s = miner.sample || {};
  const [rate, unit] = hashrate(s.hashrate_ths);
  setValue(document.getElementById("now-hashrate"), rate, unit);
  const expected = hashrate(s.expected_hashrate_ths);
  document.getElementById("now-expected").textContent = isNum(s.expected_hashrate_ths) ? `expected ${expected.join(" ")}` : "";
  setValue(document.getElementById("now-temp"), isNum(s.temp_c) ? num(s.temp_c, 1) : "–", "°C");
  document.getElementById("now-vr").textContent = isNum(s.vr_temp_c) ? `VR ${num(s.vr_temp_c, 0)} °C` : "";
  const watts = power(s.power_w);
  setValue(document.getElementById("now-power"), watts[0], watts[1]);
  document.getElementById("now-efficiency").textContent = isNum(s.efficiency_jth)
    ? `${num(s.efficiency_jth, 1)} J/TH` : (s.power_w === null ? "the firmware reports no power" : "");
  setValue(document.getElementById("now-shares"), isNum(s.shares_accepted) ? num(s.shares_accepted, 0) : "–", "");
  document.getElementById("now-rejected").textContent = isNum(s.shares_rejected) ? `${num(s.shares_rejected, 0)} rejected` : "";
  fact("pool", s.pool_url);
  fact("uptime", isNum(s.uptime_s) ? duration(s.uptime_s) : "");
}

let shownState = "";

function renderState() {
  const { status, sample } = miner;
  const nowMs = Date.now();
  const { state, since } = minerState(status, sample, live.collector(), nowMs, live.staleAfterS);
  const seen = lastSeen(status, sample);
  const sinceMs = tsMs(since);
  const reason = notLiveReason(state, status, live.collector()) || (status && status.reason);
  const key = `${state}|${since}|${reason}|${Math.floor((nowMs - sinceMs) / 60000)}|${age(seen)}`;
  if (key === shownState) return;
  shownState = key;
  const node = document.getElementById("miner-state");
  node.dataset.state = state;
  const parts = [el("span", `state state-${state}`, capitalized(state))];
  if (since) {
    const lasting = Number.isNaN(sinceMs) ? "" : ` (${duration((nowMs - sinceMs) / 1000)})`;
    parts.push(el("span", "since", `since ${clock(since)}${lasting}`));
  }
  if (reason) parts.push(el("span", "reason", reason));
  if (seen) parts.push(el("span", "seen", `last seen ${age(seen)}`));
  node.replaceChildren(...parts);
  document.querySelector(".now").classList.toggle("not-live", state === "stale" || state === "offline");
}

// ---- history ------------------------------------------------------------------------------

function describeStep(first) {
  if (!first) return "no data";
  if (!first.rollup) return "raw samples";
  if (first.step === 60) return "1-minute averages, min/max shaded";
  if (first.step === 3600) return "1-hour averages, min/max shaded";
  return `${first.step}-second buckets`;
}

function drawCharts() {
  const toS = Date.now() / 1000;
  const fromS = toS - range.seconds;
  for (const chart of charts) chart.draw(rows, fromS, toS);
}

async function loadHistory() {
  const seq = ++loadSeq;
  loading = true;
  const since = new Date(Date.now() - range.seconds * 1000).toISOString();
  const query = new URLSearchParams({ since, step: "auto", limit: String(range.limit) });
  const status = document.getElementById("resolution");
  status.textContent = "loading…";
  let items;
  try {
    items = await getJson(`/api/miners/${encodeURIComponent(minerId)}/samples?${query}`);
  } catch (error) {
    if (seq !== loadSeq) return;
    loading = false;
    status.textContent = error.status === 404 ? "" : `History not available: ${error.message}`;
    if (error.status === 404) showMissing();
    rows.length = 0;
    drawCharts();
    return;
  }
  if (seq !== loadSeq) return; // another range was picked meanwhile
  loading = false;
  rows.length = 0;
  for (const item of Array.isArray(items) ? items : []) {
    const row = isObject(item) ? rowOf(item, live.pollIntervalS) : null;
    if (row) rows.push(row);
  }
  // The history has what the store wrote up to the latest sample known now.
  foldedUpToMs = Math.max(rows.length ? rows[rows.length - 1].t * 1000 : 0,
                          miner.sample ? tsMs(miner.sample.ts) || 0 : 0);
  status.textContent = `${describeStep(rows[0])} · ${rows.length} points`;
  drawCharts();
}

function pickRange(picked) {
  range = picked;
  const url = new URL(location.href);
  url.searchParams.set("range", picked.key);
  history.replaceState(null, "", url);
  loadHistory();
}

function showMissing() {
  if (miner.known) return;
  const missing = document.getElementById("missing");
  missing.textContent = `minerwatch knows no miner "${minerId}" (yet): it shows here as soon as the collector reports it.`;
  missing.hidden = false;
}

// ---- events -------------------------------------------------------------------------------

// An audit entry: who did what to the miner, and how it ended.
function commandText(event) {
  const what = (ACTIONS[event.action] && ACTIONS[event.action].done) || capitalized(String(event.action || "command"));
  const node = el("span", "what");
  node.append(el("strong", "", what));
  if (event.by) node.append(` by ${event.by}`);
  node.append(": ", el("span", `outcome outcome-${event.status === "ok" ? "ok" : "not-ok"}`, String(event.status || "unknown")));
  if (event.message) node.append(` — ${event.message}`);
  const changes = event.status === "ok" ? describeChanges(event) : "";
  if (changes) node.append(el("span", "sub", changes));
  return node;
}

// A CommandResult (over the WebSocket or as the api's answer) as an events-list item.
function commandEvent(result) {
  const { id, ts, action, by, status, message, changed, before, after } = result;
  return { type: "command", id, ts, action, by, status, message, changed, before, after };
}

function eventText(event) {
  if (event.type === "command") {
    return [event.status === "ok" ? "command" : "command-failed", commandText(event)];
  }
  if (event.type === "status" && isObject(event.status)) {
    const { state, reason } = event.status;
    return [state, capitalized(state || "unknown") + (reason ? `: ${reason}` : "")];
  }
  if (event.type === "alert" && isObject(event.alert)) {
    const { rule, state, message, severity } = event.alert;
    return [`alert-${state}`, `${capitalized(severity || "")} alert ${rule} ${state}${message ? `: ${message}` : ""}`];
  }
  return ["unknown", "Unknown event"];
}

function renderEvents() {
  const list = document.getElementById("event-list");
  const newest = [...events].sort((a, b) => tsMs(b.ts) - tsMs(a.ts));
  list.replaceChildren(...newest.map((event) => {
    const [kind, text] = eventText(event);
    const item = el("li", `event event-${kind}`);
    item.dataset.type = event.type;
    const when = el("time", "when", clock(event.ts));
    when.dateTime = event.ts;
    item.append(when, typeof text === "string" ? el("span", "what", text) : text);
    return item;
  }));
  document.getElementById("no-events").hidden = events.length > 0;
}

// One status change or alert event, however many times it comes (history, replays).
function eventKey(event) {
  if (event.type === "status" && isObject(event.status)) return `status|${event.ts}|${event.status.state}`;
  if (event.type === "alert" && isObject(event.alert)) return `alert|${event.ts}|${event.alert.rule}|${event.alert.state}`;
  // A command's id, where the events api and the result both carry it.
  if (event.type === "command") return event.id ? `command|${event.id}` : `command|${event.ts}|${event.action}|${event.status}`;
  return `${event.type}|${event.ts}`;
}

const eventKeys = new Set();

function addEvent(event, render = true) {
  const key = eventKey(event);
  if (eventKeys.has(key)) return;
  eventKeys.add(key);
  events.push(event);
  if (events.length > EVENTS_LIMIT * 2) {
    events.sort((a, b) => tsMs(a.ts) - tsMs(b.ts));
    for (const old of events.splice(0, events.length - EVENTS_LIMIT * 2)) eventKeys.delete(eventKey(old));
  }
  if (render) renderEvents();
}

async function loadEvents() {
  try {
    const found = await getJson(`/api/miners/${encodeURIComponent(minerId)}/events?limit=${EVENTS_LIMIT}`);
    for (const event of Array.isArray(found) ? found : []) {
      if (isObject(event) && typeof event.ts === "string") addEvent(event, false);
    }
  } catch (error) {
    if (error.status !== 404) console.warn("minerwatch: could not load events:", error);
  }
  renderEvents();
}

// ---- energy -------------------------------------------------------------------------------

async function loadEnergy() {
  let energy;
  try {
    energy = await getJson("/api/energy");
  } catch (error) {
    console.warn("minerwatch: could not load /api/energy:", error);
    return;
  }
  if (!isObject(energy) || !Array.isArray(energy.days)) return;
  const mine = energy.days.map((day) => (isObject(day.miners) && isNum(day.miners[minerId]) ? day.miners[minerId] : null));
  const known = mine.filter(isNum);
  if (!known.length) {
    fact("energy", "no power reported");
    return;
  }
  const total = known.reduce((a, b) => a + b, 0);
  const today = mine[mine.length - 1];
  const price = isNum(energy.price_per_kwh) ? energy.price_per_kwh : null;
  const cost = price === null ? "" : ` · ${num(total * price, 2)} ${energy.currency || ""}`.trimEnd();
  fact("energy", `${isNum(today) ? num(today, 2) : "–"} kWh today · ${num(total, 1)} kWh in ${energy.days.length} days${cost}`);
}

// ---- live ---------------------------------------------------------------------------------

function onTopic(levels, payload, topic) {
  if (levels.length === 3 && levels[0] === "miners" && levels[1] === minerId && levels[2] === "tune") {
    control.onTune(payload);
  } else if (levels.length === 4 && levels[0] === "miners" && levels[1] === minerId
             && levels[2] === "command" && levels[3] === "result") {
    if (isObject(payload) && typeof payload.ts === "string" && payload.action !== "settings") {
      addEvent(commandEvent(payload));
    }
  } else if (levels.length === 3 && levels[0] === "miners" && levels[1] === minerId) {
    update(levels[2], payload);
  } else if (levels.length === 3 && levels[0] === "alerts" && levels[1] === minerId) {
    const wasFiring = alertList.alerts.has(topic);
    alertList.update(topic, payload);
    if (isObject(payload) && (payload.state !== "firing" || !wasFiring)) {
      addEvent({ type: "alert", ts: payload.ts, alert: payload });
    }
  } else if (levels.length === 2 && levels[0] === "mutes") {
    alertList.updateMute(levels[1], payload);
  }
}

function update(kind, value) {
  const present = isObject(value);
  if (kind === "sample") {
    if (present && !newer(miner.sample, value, "ts")) return;
    miner.sample = present ? value : null;
    if (present) {
      miner.known = true;
      document.getElementById("missing").hidden = true;
      const ms = tsMs(value.ts);
      if (!loading && ms > foldedUpToMs && ms >= Date.now() - range.seconds * 1000) {
        foldedUpToMs = ms;
        if (addSample(rows, value, live.pollIntervalS, Date.now() / 1000 - range.seconds)) drawCharts();
      }
    }
    renderNow();
  } else if (kind === "status") {
    if (present && !newer(miner.status, value, "since")) return;
    const changed = present && (!miner.status || miner.status.since !== value.since || miner.status.state !== value.state);
    miner.status = present ? value : null;
    if (changed) addEvent({ type: "status", ts: value.since, status: value });
  } else if (kind === "info") {
    miner.info = present ? value : null;
    if (present) miner.known = true;
    renderIdentity();
  }
  renderState();
}

async function loadMiner() {
  try {
    for (const entry of await getJson("/api/miners")) {
      if (!isObject(entry) || entry.miner_id !== minerId) continue;
      miner.known = true;
      if (entry.info) update("info", entry.info);
      if (entry.status) update("status", entry.status);
      if (entry.sample) update("sample", entry.sample);
      for (const alert of Array.isArray(entry.alerts) ? entry.alerts : []) {
        if (isObject(alert)) alertList.update(`${live.base}/alerts/${minerId}/${alert.rule}`, alert);
      }
    }
  } catch (error) {
    console.warn("minerwatch: could not load /api/miners:", error);
  }
  if (!miner.known) showMissing();
}

async function start() {
  renderIdentity();
  for (const spec of MINER_CHARTS) {
    charts.push(new Chart(document.querySelector(`[data-chart="${spec.field}"]`), spec));
  }
  range = rangePicker(document.getElementById("ranges"), range.key, pickRange);
  await live.configure();
  // Independent reads, at once: who it is, its history, its events.
  await Promise.all([loadMiner(), loadHistory(), loadEvents()]);
  live.connect();
  loadEnergy();
  control.start();
  setInterval(() => {
    renderState();
    control.tick();
    if (alertList.alerts.size) alertList.render();
  }, TICK_MS);
}

start();
