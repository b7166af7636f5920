// minerwatch dashboard: the fleet from GET /api/miners, then live over WS /ws.
// Plain JS, no build step. Values are written with textContent only (never innerHTML),
// so nothing a miner reports (a label, a reason, an alert message) can inject markup.
//
// The dashboard never shows a dead number as live: a miner is "Stale" while the collector
// is not online, or while its latest sample is older than the api's stale_after_s (checked
// every second, not only when a message comes), and stale or offline miners are left out
// of the fleet totals. A banner says which minerwatch service is offline.
"use strict";

const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 15000;
const HEALTH_EVERY_MS = 30000; // /healthz again: broker and database state, services' since
const TICK_MS = 1000;
const DEFAULT_STALE_AFTER_S = 30; // 3 x the collector's default poll interval
const MUTE_FOR_S = 3600;
const NOTICE_MS = 8000;

// The services whose outage the banner reports, and what it means for the page.
const SERVICES = [
  ["collector", "The collector", "the numbers below are not live"],
  ["store", "The store", "history is not being recorded"],
  ["alerts", "The alerts service", "no alerts are being raised or sent"],
];

const fleet = new Map(); // miner_id -> {info, status, sample, renamed, editing, shown, row}
const alerts = new Map(); // alert topic -> AlertEvent (firing only)
const mutes = new Map(); // mute id -> Mute
const services = new Map(); // service -> {state: online|offline|unknown, since: ts|null}
const health = { broker: "up", database: "up", since: null };
let baseTopic = null;
let staleAfterS = DEFAULT_STALE_AFTER_S;
let linkUp = false;
let linkDownSince = null;
let serviceMessages = 0; // WebSocket service frames seen; a /healthz answer older than one loses
let reconnectDelay = RECONNECT_MIN_MS;
let noticeTimer = null;

// ---- formatting ---------------------------------------------------------------------------

const isNum = (v) => typeof v === "number" && Number.isFinite(v);
const isObject = (v) => v !== null && typeof v === "object";
const tsMs = (ts) => (typeof ts === "string" ? Date.parse(ts) : NaN);

function num(value, digits) {
  return value.toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function hashrate(ths) {
  if (!isNum(ths)) return ["–", ""];
  if (ths >= 1000) return [num(ths / 1000, 2), "PH/s"];
  return [num(ths, ths >= 100 ? 1 : 2), "TH/s"];
}

function age(ts) {
  const ms = tsMs(ts);
  if (Number.isNaN(ms)) return "–";
  const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

// "10:02" today, "Mar 3, 10:02" another day; "an unknown time" when there is none.
function clock(ts) {
  const ms = tsMs(ts);
  if (Number.isNaN(ms)) return "an unknown time";
  const when = new Date(ms);
  const time = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  if (when.toDateString() === new Date().toDateString()) return time;
  return `${when.toLocaleDateString([], { month: "short", day: "numeric" })}, ${time}`;
}

const capitalized = (word) => word.charAt(0).toUpperCase() + word.slice(1);

// ---- what is true about a miner (pure) ----------------------------------------------------

// The latest of status.last_seen and the sample's ts: the last time live data came.
function lastSeen(status, sample) {
  const times = [status && status.last_seen, sample && sample.ts].filter((ts) => !Number.isNaN(tsMs(ts)));
  if (!times.length) return null;
  return times.reduce((a, b) => (tsMs(b) > tsMs(a) ? b : a));
}

// {state: online|idle|offline|stale|unknown, since: ts|null}, by the api's rule (presence.py).
function minerState(status, sample, collectorState, nowMs, staleAfter) {
  if (!status && !sample) return { state: "unknown", since: null };
  const staleSince = lastSeen(status, sample) || (status && status.since) || null;
  if (collectorState !== "online") return { state: "stale", since: staleSince };
  if (status && status.state === "offline") return { state: "offline", since: status.since };
  // Online or idle (or only a sample so far): live only while samples keep coming; without
  // a sample yet, the status's own moments say whether the collector still reports.
  const ageS = (nowMs - tsMs(sample ? sample.ts : staleSince)) / 1000;
  if (!(ageS <= staleAfter)) return { state: "stale", since: staleSince };
  if (status) return { state: status.state, since: status.since };
  return { state: sample.is_mining === false ? "idle" : "online", since: null };
}

// The name a person reads: the label (a rename just saved wins until the info has it).
function labelOf(minerId) {
  const miner = fleet.get(minerId);
  if (!miner) return null;
  if (miner.renamed !== undefined) return miner.renamed || minerId;
  return (miner.info && miner.info.label) || minerId;
}

function mutesOf(alert, nowMs) {
  return [...mutes.values()].filter((mute) =>
    (mute.miner_id == null || mute.miner_id === alert.miner_id)
    && (mute.rule == null || mute.rule === alert.rule)
    && tsMs(mute.until) > nowMs);
}

const collectorState = () => (services.get("collector") || { state: "unknown" }).state;

// ---- DOM helpers --------------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(text, className, onClick) {
  const node = el("button", className, text);
  node.type = "button";
  node.addEventListener("click", onClick);
  return node;
}

// A value with its unit in a smaller, muted span: "62.5 °C".
function setValue(cell, value, unit) {
  cell.replaceChildren(document.createTextNode(value));
  if (unit && value !== "–") cell.append(el("span", "unit", unit));
}

function setSub(cell, main, sub) {
  cell.replaceChildren(document.createTextNode(main));
  if (sub) cell.append(el("span", "sub", sub));
}

function flash(cell) {
  cell.classList.remove("flash");
  void cell.offsetWidth; // restart the animation
  cell.classList.add("flash");
}

// A one-line message about an action that failed (or worked, where that is not visible).
function notify(text) {
  const notice = document.getElementById("notice");
  notice.textContent = text;
  notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { notice.hidden = true; }, NOTICE_MS);
}

// ---- HTTP ---------------------------------------------------------------------------------

async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// A change through the api; resolves to the answer's JSON, rejects with its one-line detail.
async function send(method, path, body) {
  const options = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch {
    throw new Error("the api cannot be reached");
  }
  let answer = null;
  try {
    answer = await response.json();
  } catch {
    // no JSON body: the status says it
  }
  if (!response.ok) {
    const detail = answer && typeof answer.detail === "string" ? answer.detail : `HTTP ${response.status}`;
    throw new Error(detail);
  }
  return answer;
}

// ---- one miner row ------------------------------------------------------------------------

const FIELDS = ["name", "model", "state", "hashrate", "temp", "power", "efficiency", "fans", "shares", "updated", "actions"];
const NUMERIC = new Set(["hashrate", "temp", "power", "efficiency", "shares", "updated"]);
const METRICS = new Set(["hashrate", "temp", "power", "efficiency", "fans", "shares"]);

function minerRow(minerId) {
  const row = el("tr");
  row.dataset.miner = minerId;
  for (const field of FIELDS) {
    const classes = [NUMERIC.has(field) ? "num" : "", METRICS.has(field) ? "metric" : ""];
    const cell = el("td", classes.join(" ").trim());
    cell.dataset.field = field;
    row.append(cell);
  }
  cell(row, "actions").append(rowMenu(minerId));
  return row;
}

function cell(row, field) {
  return row.querySelector(`[data-field="${field}"]`);
}

// A small per-row menu: rename, forget.
function rowMenu(minerId) {
  const menu = el("details", "menu");
  const summary = el("summary", "", "⋯");
  summary.title = "Rename or forget this miner";
  summary.setAttribute("aria-label", `Actions for ${minerId}`);
  const items = el("div", "menu-items");
  items.append(
    button("Rename…", "", () => { menu.open = false; startRename(minerId); }),
    button("Forget…", "danger", () => { menu.open = false; forget(minerId); }),
  );
  menu.append(summary, items);
  return menu;
}

function renderName(minerId, miner) {
  if (miner.editing) return; // the rename form is there
  const { info } = miner;
  const name = cell(miner.row, "name");
  const label = labelOf(minerId);
  name.replaceChildren(el("span", "name", label));
  if (label !== minerId) name.append(" ", el("span", "id", minerId));
  const hostname = info && info.hostname !== minerId && info.hostname !== label ? info.hostname : null;
  const where = info ? [hostname, `${info.host}:${info.port}`].filter(Boolean).join(" · ") : "";
  if (where) name.append(el("span", "sub", where));
}

function renderMiner(minerId, changedSample) {
  const miner = fleet.get(minerId);
  const { info, sample } = miner;
  const row = miner.row;
  renderName(minerId, miner);
  placeRow(minerId, row);

  const maker = info ? [info.make, info.model].filter(Boolean).join(" ") : "";
  setSub(cell(row, "model"), maker || "–", info && info.firmware ? `fw ${info.firmware}` : "");

  const s = sample || {};
  const [rate, rateUnit] = hashrate(s.hashrate_ths);
  setValue(cell(row, "hashrate"), rate, rateUnit);
  const temp = cell(row, "temp");
  setValue(temp, isNum(s.temp_c) ? num(s.temp_c, 1) : "–", "°C");
  if (isNum(s.vr_temp_c)) temp.append(el("span", "sub", `VR ${num(s.vr_temp_c, 0)} °C`));
  setValue(cell(row, "power"), isNum(s.power_w) ? num(s.power_w, 0) : "–", "W");
  setValue(cell(row, "efficiency"), isNum(s.efficiency_jth) ? num(s.efficiency_jth, 1) : "–", "J/TH");
  const fans = Array.isArray(s.fan_rpm) ? s.fan_rpm.filter(isNum) : [];
  setValue(cell(row, "fans"), fans.length ? fans.map((rpm) => num(rpm, 0)).join(" · ") : "–", "rpm");
  const shares = cell(row, "shares");
  shares.replaceChildren(document.createTextNode(isNum(s.shares_accepted) ? num(s.shares_accepted, 0) : "–"));
  if (isNum(s.shares_rejected)) {
    shares.append(el("span", s.shares_rejected > 0 ? "sub rejected" : "sub", `${num(s.shares_rejected, 0)} rejected`));
  }
  miner.shown = null; // the state cell is drawn afresh
  renderState(minerId, miner, Date.now());
  if (changedSample) flash(cell(row, "hashrate"));
}

// The state cell, the row's look and "last seen": redrawn every tick, as time alone makes a
// miner stale. True when the state changed (the totals must follow).
function renderState(minerId, miner, nowMs) {
  const { status, sample, row } = miner;
  const { state, since } = minerState(status, sample, collectorState(), nowMs, staleAfterS);
  const seen = lastSeen(status, sample);
  const updated = cell(row, "updated");
  updated.textContent = age(seen);
  updated.title = seen || "";
  updated.classList.toggle("old", state === "stale" || state === "offline");

  const key = `${state}|${since}|${status ? status.reason : ""}`;
  if (miner.shown === key) return false;
  const changed = !miner.shown || miner.shown.split("|")[0] !== state;
  miner.shown = key;
  miner.state = state;
  row.dataset.state = state;
  row.classList.toggle("not-live", state === "stale" || state === "offline");

  const badge = el("span", `state state-${state}`, capitalized(state));
  const stateCell = cell(row, "state");
  stateCell.replaceChildren(badge);
  if (state === "stale" || state === "offline") {
    const why = state === "stale"
      ? (collectorState() === "online" ? "no sample for too long" : `the collector is ${collectorState()}`)
      : status && status.reason;
    if (why) badge.title = why;
    stateCell.append(el("span", "sub", `since ${clock(since)}`));
    if (state === "offline" && status && status.reason) stateCell.append(el("span", "sub reason", status.reason));
  } else if (status && status.reason) {
    badge.title = status.reason;
  }
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
  const cancel = () => {
    miner.editing = false;
    renderName(minerId, miner);
  };
  form.append(input, el("button", "", "Save"), button("Cancel", "quiet", cancel), problem);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const label = input.value.trim() || null; // empty: back to the id
    try {
      const answer = await send("PATCH", `/api/miners/${encodeURIComponent(minerId)}`, { label });
      const current = fleet.get(minerId);
      if (!current) return; // forgotten meanwhile
      current.renamed = answer && "label" in answer ? answer.label : label;
      cancel();
      renderAlerts();
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
              shown: null, state: "unknown", row: minerRow(minerId) };
    fleet.set(minerId, miner);
  }
  return miner;
}

function removeMiner(minerId) {
  const miner = fleet.get(minerId);
  if (!miner) return;
  miner.row.remove();
  fleet.delete(minerId);
  document.getElementById("empty").hidden = fleet.size > 0;
  renderTotals();
  renderAlerts();
}

// Rows stay sorted by the name a person reads, then by id.
function sortKey(minerId) {
  return [(labelOf(minerId) || minerId).toLocaleLowerCase(), minerId];
}

function before(a, b) {
  const [la, ia] = sortKey(a);
  const [lb, ib] = sortKey(b);
  const byLabel = la.localeCompare(lb);
  return byLabel < 0 || (byLabel === 0 && ia < ib);
}

function placeRow(minerId, row) {
  const body = document.getElementById("miner-rows");
  const next = [...body.children].find((other) => other !== row && before(minerId, other.dataset.miner));
  if (row.parentNode !== body || row.nextSibling !== (next || null)) body.insertBefore(row, next || null);
  document.getElementById("empty").hidden = true;
}

// Newer wins: the HTTP snapshot and the WebSocket replay may arrive in either order.
function newer(current, incoming, key) {
  return !current || !incoming[key] || !current[key] || tsMs(incoming[key]) >= tsMs(current[key]);
}

function update(minerId, kind, value) {
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
  } else if (kind === "status") {
    if (present && !newer(miner.status, value, "since")) return;
    miner.status = present ? value : null;
  } else {
    miner.info = present ? value : null;
    // The collector folded the new label in: the info is the truth again.
    if (present && miner.renamed !== undefined && (value.label || null) === miner.renamed) miner.renamed = undefined;
  }
  if (!miner.info && !miner.status && !miner.sample) {
    removeMiner(minerId); // forgotten: every retained topic of it was cleared
    return;
  }
  renderMiner(minerId, fresh);
  renderTotals();
  if (kind === "info") renderAlerts(); // the label shown with its alerts
}

function renderTotals() {
  let online = 0;
  let stale = 0;
  let rate = 0;
  let power = 0;
  let ratedPower = 0;
  let ratedRate = 0;
  for (const miner of fleet.values()) {
    if (miner.state === "online") online += 1;
    if (miner.state === "stale") stale += 1;
    // Only what the fleet does now: not the last values of stale or offline miners.
    if ((miner.state !== "online" && miner.state !== "idle") || !miner.sample) continue;
    const s = miner.sample;
    if (isNum(s.hashrate_ths)) rate += s.hashrate_ths;
    if (isNum(s.power_w)) power += s.power_w;
    if (isNum(s.power_w) && isNum(s.hashrate_ths) && s.hashrate_ths > 0) {
      ratedPower += s.power_w;
      ratedRate += s.hashrate_ths;
    }
  }
  const count = document.getElementById("total-online");
  count.replaceChildren(document.createTextNode(`${online} / ${fleet.size}`),
                        el("span", "detail", stale ? " online · " : " online"));
  if (stale) count.append(el("span", "detail stale-count", `${stale} stale`));
  const [value, unit] = hashrate(rate);
  setValue(document.getElementById("total-hashrate"), value, unit);
  const totalPower = power >= 10000 ? [num(power / 1000, 1), "kW"] : [num(power, 0), "W"];
  setValue(document.getElementById("total-power"), totalPower[0], totalPower[1]);
  setValue(
    document.getElementById("total-efficiency"),
    ratedRate > 0 ? num(ratedPower / ratedRate, 1) : "–",
    "J/TH",
  );
}

// ---- services and the banner --------------------------------------------------------------

function setService(name, state, since) {
  const current = services.get(name);
  if (current && current.state === state && (since === undefined || since === current.since)) return false;
  services.set(name, { state, since: since === undefined ? new Date().toISOString() : since });
  return true;
}

function onServiceChange() {
  renderBanner();
  const nowMs = Date.now();
  for (const [minerId, miner] of fleet) renderState(minerId, miner, nowMs);
  renderTotals();
}

function renderBanner() {
  const lines = [];
  if (!linkUp && linkDownSince) {
    lines.push(["api", `The connection to the api is down since ${clock(linkDownSince)}: the numbers below are not live.`]);
  } else if (health.broker === "down") {
    lines.push(["broker", `The api has lost the broker since ${clock(health.since)}: the numbers below are not live.`]);
  }
  for (const [name, who, meaning] of SERVICES) {
    const seen = services.get(name);
    if (seen && seen.state === "offline") {
      lines.push([name, `${who} is offline since ${clock(seen.since)}: ${meaning}.`]);
    } else if (name === "collector" && seen && seen.state === "unknown" && health.broker === "up") {
      lines.push([name, "The collector has not reported that it is running: the numbers below may not be live."]);
    }
  }
  if (health.database === "down") lines.push(["database", "The api cannot reach the database: history is not available."]);
  const banner = document.getElementById("banner");
  banner.replaceChildren(...lines.map(([name, text]) => {
    const line = el("p", "", text);
    line.dataset.service = name;
    return line;
  }));
  banner.hidden = lines.length === 0;
}

async function loadHealth() {
  const seenBefore = serviceMessages;
  let body;
  try {
    const response = await fetch("/healthz", { headers: { Accept: "application/json" }, cache: "no-store" });
    body = await response.json(); // 503 (broker or database down) has the same body
  } catch (error) {
    console.warn("minerwatch: could not load /healthz:", error);
    return;
  }
  if (!isObject(body)) return;
  const brokerWas = health.broker;
  health.broker = body.broker === "down" ? "down" : "up";
  health.database = body.database === "down" ? "down" : "up";
  if (health.broker === "down" && brokerWas !== "down") health.since = new Date().toISOString();
  let changed = brokerWas !== health.broker;
  // A service frame that came while this answer was on its way is newer than the answer.
  if (isObject(body.services) && serviceMessages === seenBefore) {
    for (const [name] of SERVICES) {
      const seen = body.services[name];
      if (!isObject(seen)) continue;
      const state = seen.state === "online" || seen.state === "offline" ? seen.state : "unknown";
      changed = setService(name, state, typeof seen.since === "string" ? seen.since : null) || changed;
    }
  }
  if (changed) onServiceChange();
  else renderBanner();
}

// ---- alerts and mutes ---------------------------------------------------------------------

function updateAlert(topic, value) {
  if (isObject(value) && value.state === "firing") alerts.set(topic, value);
  else alerts.delete(topic); // resolved, a one-off event, or the retained alert was cleared
  renderAlerts();
}

function updateMute(muteId, value) {
  if (isObject(value) && typeof value.until === "string") mutes.set(muteId, value);
  else mutes.delete(muteId); // lifted, or expired and cleared
  renderAlerts();
}

async function mute(alert) {
  try {
    const created = await send("POST", "/api/alerts/mute",
                               { miner_id: alert.miner_id, rule: alert.rule, for_s: MUTE_FOR_S });
    if (isObject(created) && typeof created.id === "string") mutes.set(created.id, created);
    renderAlerts();
  } catch (error) {
    notify(`Could not mute ${alert.rule} of ${labelOf(alert.miner_id) || alert.miner_id}: ${error.message}`);
  }
}

async function unmute(muteId) {
  try {
    await send("DELETE", `/api/alerts/mutes/${encodeURIComponent(muteId)}`);
    mutes.delete(muteId);
    renderAlerts();
  } catch (error) {
    notify(`Could not unmute: ${error.message}`);
  }
}

function alertItem(alert, nowMs) {
  const item = el("li");
  item.dataset.miner = alert.miner_id;
  item.dataset.rule = alert.rule;
  const label = labelOf(alert.miner_id) || alert.label || alert.miner_id;
  const who = el("span", "who");
  who.append(el("strong", "", label));
  if (label !== alert.miner_id) who.append(" ", el("span", "id", alert.miner_id));
  item.append(
    el("span", `severity severity-${alert.severity}`, alert.severity),
    who,
    el("span", "message", alert.message),
    el("span", "when", `since ${clock(alert.since || alert.ts)}`),
  );
  const held = mutesOf(alert, nowMs);
  item.classList.toggle("muted", held.length > 0);
  if (held.length) {
    const until = held.reduce((a, b) => (tsMs(b.until) > tsMs(a.until) ? b : a)).until;
    item.append(el("span", "muted-mark", `muted until ${clock(until)}`));
    // Only a mute of exactly this alert is lifted from here, never a wider one.
    const own = held.filter((m) => m.miner_id === alert.miner_id && m.rule === alert.rule);
    if (own.length === held.length) {
      item.append(button("Unmute", "quiet", () => own.forEach((m) => unmute(m.id))));
    }
  } else {
    item.append(button("Mute 1 h", "quiet", () => mute(alert)));
  }
  return item;
}

function renderAlerts() {
  const nowMs = Date.now();
  const list = document.getElementById("alert-list");
  const firing = [...alerts.values()].sort((a, b) => (a.ts < b.ts ? 1 : -1));
  list.replaceChildren(...firing.map((alert) => alertItem(alert, nowMs)));
  document.getElementById("alerts").hidden = firing.length === 0;
  document.getElementById("total-alerts").textContent = String(firing.length);
}

// ---- data sources -------------------------------------------------------------------------

async function loadSnapshot() {
  try {
    for (const entry of await getJson("/api/miners")) {
      if (!isObject(entry) || typeof entry.miner_id !== "string") continue;
      if (entry.info) update(entry.miner_id, "info", entry.info);
      if (entry.status) update(entry.miner_id, "status", entry.status);
      if (entry.sample) update(entry.miner_id, "sample", entry.sample);
      for (const alert of Array.isArray(entry.alerts) ? entry.alerts : []) {
        if (isObject(alert)) updateAlert(`${baseTopic}/alerts/${entry.miner_id}/${alert.rule}`, alert);
      }
    }
    renderTotals();
  } catch (error) {
    console.warn("minerwatch: could not load /api/miners:", error);
  }
}

function onMessage(event) {
  let message;
  try {
    message = JSON.parse(event.data);
  } catch {
    return;
  }
  if (!isObject(message)) return;
  if (message.error) {
    console.warn("minerwatch: server says:", message.error);
    return;
  }
  if (typeof message.topic !== "string" || !message.topic.startsWith(`${baseTopic}/`)) return;
  const levels = message.topic.slice(baseTopic.length + 1).split("/");
  const payload = message.payload;
  if (levels.length === 3 && levels[0] === "miners") update(levels[1], levels[2], payload);
  else if (levels.length === 3 && levels[0] === "alerts") updateAlert(message.topic, payload);
  else if (levels.length === 2 && levels[0] === "mutes") updateMute(levels[1], payload);
  else if (levels.length === 3 && levels[0] === "services" && levels[2] === "status") {
    serviceMessages += 1;
    const state = payload === "online" || payload === "offline" ? payload : "unknown";
    if (setService(levels[1], state)) onServiceChange();
  }
}

function setLink(up) {
  const link = document.getElementById("link");
  link.className = `link ${up ? "link-up" : "link-down"}`;
  link.textContent = up ? "live" : "reconnecting…";
  if (up !== linkUp || (!up && !linkDownSince)) linkDownSince = up ? null : new Date().toISOString();
  linkUp = up;
  renderBanner();
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws`);
  socket.addEventListener("open", () => {
    reconnectDelay = RECONNECT_MIN_MS;
    setLink(true);
    // The server first replays the current (retained) state of every matching topic.
    for (const filter of ["miners/+/+", "alerts/+/+", "mutes/+", "services/+/status"]) {
      socket.send(JSON.stringify({ subscribe: `${baseTopic}/${filter}` }));
    }
    loadHealth(); // since when each service is in its state, as the api saw it
  });
  socket.addEventListener("message", onMessage);
  socket.addEventListener("close", () => {
    setLink(false);
    setTimeout(connect, reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, RECONNECT_MAX_MS);
  });
}

// Every second: time alone makes a miner stale and a mute expire.
function tick() {
  const nowMs = Date.now();
  let changed = false;
  for (const [minerId, miner] of fleet) changed = renderState(minerId, miner, nowMs) || changed;
  if (changed) renderTotals();
  if (alerts.size) renderAlerts();
}

async function start() {
  while (baseTopic === null) {
    try {
      const config = await getJson("/api/config");
      if (isNum(config.stale_after_s) && config.stale_after_s > 0) staleAfterS = config.stale_after_s;
      else if (isNum(config.poll_interval_s) && config.poll_interval_s > 0) staleAfterS = 3 * config.poll_interval_s;
      baseTopic = config.base_topic;
    } catch (error) {
      console.warn("minerwatch: waiting for the api:", error);
      setLink(false);
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_MIN_MS));
    }
  }
  await loadHealth();
  await loadSnapshot();
  connect();
  setInterval(tick, TICK_MS);
  setInterval(loadHealth, HEALTH_EVERY_MS);
}

document.addEventListener("click", (event) => {
  // An open row menu closes when a click lands anywhere else.
  for (const menu of document.querySelectorAll("details.menu[open]")) {
    if (!menu.contains(event.target)) menu.open = false;
  }
});

start();
