// minerwatch dashboard: the fleet from GET /api/miners, then live over WS /ws.
// Plain JS, no build step. Values are written with textContent only (never innerHTML),
// so nothing a miner reports can inject markup.
"use strict";

const STALE_AFTER_S = 60; // a sample older than this is shown as old even when "online"
const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 15000;

const fleet = new Map(); // miner_id -> {info, status, sample, row}
const alerts = new Map(); // alert topic -> AlertEvent (firing only)
let baseTopic = null;
let reconnectDelay = RECONNECT_MIN_MS;

// ---- formatting ---------------------------------------------------------------------------

const isNum = (v) => typeof v === "number" && Number.isFinite(v);

function num(value, digits) {
  return value.toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function hashrate(ths) {
  if (!isNum(ths)) return ["–", ""];
  if (ths >= 1000) return [num(ths / 1000, 2), "PH/s"];
  return [num(ths, ths >= 100 ? 1 : 2), "TH/s"];
}

function age(ts) {
  if (!ts) return "–";
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(ts)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

function ageSeconds(ts) {
  return ts ? (Date.now() - Date.parse(ts)) / 1000 : Infinity;
}

// ---- DOM helpers --------------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
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

// ---- one miner row ------------------------------------------------------------------------

const FIELDS = ["name", "model", "state", "hashrate", "temp", "power", "efficiency", "fans", "shares", "updated"];
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
  return row;
}

function cell(row, field) {
  return row.querySelector(`[data-field="${field}"]`);
}

function stateOf(miner) {
  return miner.status ? miner.status.state : "unknown";
}

function renderMiner(minerId, changedSample) {
  const miner = fleet.get(minerId);
  const { info, status, sample } = miner;
  const row = miner.row;

  const name = cell(row, "name");
  name.replaceChildren(el("span", "name", info && info.hostname ? info.hostname : minerId));
  name.append(" ", el("span", "id", `(${minerId})`));
  if (info) name.append(el("span", "sub", `${info.host}:${info.port}`));

  const maker = info ? [info.make, info.model].filter(Boolean).join(" ") : "";
  setSub(cell(row, "model"), maker || "–", info && info.firmware ? `fw ${info.firmware}` : "");

  const state = stateOf(miner);
  const badge = el("span", `state state-${state}`, state);
  if (status && status.reason) badge.title = status.reason;
  const stateCell = cell(row, "state");
  stateCell.replaceChildren(badge);
  if (status && status.state !== "online" && status.reason) stateCell.append(el("span", "sub", status.reason));
  row.classList.toggle("stale", state === "offline");

  const s = sample || {};
  const [rate, rateUnit] = hashrate(s.hashrate_ths);
  setValue(cell(row, "hashrate"), rate, rateUnit);
  const temp = cell(row, "temp");
  setValue(temp, isNum(s.temp_c) ? num(s.temp_c, 1) : "–", "°C");
  if (isNum(s.vr_temp_c)) temp.append(el("span", "sub", `VR ${num(s.vr_temp_c, 0)} °C`));
  setValue(cell(row, "power"), isNum(s.power_w) ? num(s.power_w, 0) : "–", "W");
  setValue(cell(row, "efficiency"), isNum(s.efficiency_jth) ? num(s.efficiency_jth, 1) : "–", "J/TH");
  const fans = Array.isArray(s.fan_rpm) ? s.fan_rpm : [];
  setValue(cell(row, "fans"), fans.length ? fans.map((rpm) => num(rpm, 0)).join(" · ") : "–", "rpm");
  const shares = cell(row, "shares");
  shares.replaceChildren(document.createTextNode(isNum(s.shares_accepted) ? num(s.shares_accepted, 0) : "–"));
  if (isNum(s.shares_rejected)) {
    shares.append(el("span", s.shares_rejected > 0 ? "sub rejected" : "sub", `${num(s.shares_rejected, 0)} rejected`));
  }
  renderAge(miner);
  if (changedSample) flash(cell(row, "hashrate"));
}

function renderAge(miner) {
  const updated = cell(miner.row, "updated");
  const ts = miner.sample ? miner.sample.ts : null;
  updated.textContent = age(ts);
  updated.title = ts || "";
  updated.classList.toggle("old", Boolean(ts) && ageSeconds(ts) > STALE_AFTER_S);
}

// ---- fleet state --------------------------------------------------------------------------

function minerEntry(minerId) {
  let miner = fleet.get(minerId);
  if (!miner) {
    miner = { info: null, status: null, sample: null, row: minerRow(minerId) };
    fleet.set(minerId, miner);
    placeRow(minerId, miner.row);
  }
  return miner;
}

// Rows stay sorted by miner id.
function placeRow(minerId, row) {
  const body = document.getElementById("miner-rows");
  const next = [...body.children].find((other) => other.dataset.miner > minerId);
  body.insertBefore(row, next || null);
  document.getElementById("empty").hidden = true;
}

// Newer wins: the HTTP snapshot and the WebSocket replay may arrive in either order.
function newer(current, incoming, key) {
  return !current || !incoming || !current[key] || !incoming[key] || incoming[key] >= current[key];
}

function update(minerId, kind, value) {
  const miner = minerEntry(minerId);
  const present = value !== "" && value !== null && typeof value === "object";
  let fresh = false;
  if (kind === "sample") {
    if (present && !newer(miner.sample, value, "ts")) return;
    // Highlight a new reading, not the first one shown nor a replay of the same one.
    fresh = present && miner.sample !== null && miner.sample.ts !== value.ts;
    miner.sample = present ? value : null;
  } else if (kind === "status") {
    if (present && !newer(miner.status, value, "since")) return;
    miner.status = present ? value : null;
  } else if (kind === "info") {
    miner.info = present ? value : null;
  } else {
    return;
  }
  renderMiner(minerId, fresh);
  renderTotals();
}

function renderTotals() {
  let online = 0;
  let rate = 0;
  let power = 0;
  let ratedPower = 0;
  let ratedRate = 0;
  for (const miner of fleet.values()) {
    const state = stateOf(miner);
    if (state === "online") online += 1;
    // Stale values of offline miners do not count towards what the fleet does now.
    if (state === "offline" || !miner.sample) continue;
    const s = miner.sample;
    if (isNum(s.hashrate_ths)) rate += s.hashrate_ths;
    if (isNum(s.power_w)) power += s.power_w;
    if (isNum(s.power_w) && isNum(s.hashrate_ths) && s.hashrate_ths > 0) {
      ratedPower += s.power_w;
      ratedRate += s.hashrate_ths;
    }
  }
  document.getElementById("total-online").textContent = `${online} / ${fleet.size}`;
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

function updateAlert(topic, value) {
  if (value && typeof value === "object" && value.state === "firing") alerts.set(topic, value);
  else alerts.delete(topic); // resolved, or the retained alert was cleared
  renderAlerts();
}

function renderAlerts() {
  const list = document.getElementById("alert-list");
  const firing = [...alerts.values()].sort((a, b) => (a.ts < b.ts ? 1 : -1));
  list.replaceChildren(
    ...firing.map((alert) => {
      const item = el("li");
      item.dataset.miner = alert.miner_id;
      item.dataset.rule = alert.rule;
      item.append(
        el("span", `severity severity-${alert.severity}`, alert.severity),
        el("strong", "", alert.miner_id),
        el("span", "", alert.message),
        el("span", "when", `since ${age(alert.ts)}`),
      );
      return item;
    }),
  );
  document.getElementById("alerts").hidden = firing.length === 0;
  document.getElementById("total-alerts").textContent = String(firing.length);
}

// ---- data sources -------------------------------------------------------------------------

async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function loadSnapshot() {
  try {
    for (const entry of await getJson("/api/miners")) {
      if (entry.info) update(entry.miner_id, "info", entry.info);
      if (entry.status) update(entry.miner_id, "status", entry.status);
      if (entry.sample) update(entry.miner_id, "sample", entry.sample);
      minerEntry(entry.miner_id);
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
  if (message.error) {
    console.warn("minerwatch: server says:", message.error);
    return;
  }
  if (typeof message.topic !== "string" || !message.topic.startsWith(`${baseTopic}/`)) return;
  const levels = message.topic.slice(baseTopic.length + 1).split("/");
  if (levels.length === 3 && levels[0] === "miners") update(levels[1], levels[2], message.payload);
  else if (levels.length === 3 && levels[0] === "alerts") updateAlert(message.topic, message.payload);
}

function setLink(up) {
  const link = document.getElementById("link");
  link.className = `link ${up ? "link-up" : "link-down"}`;
  link.textContent = up ? "live" : "reconnecting…";
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws`);
  socket.addEventListener("open", () => {
    reconnectDelay = RECONNECT_MIN_MS;
    setLink(true);
    // The server first replays the current (retained) state of every matching topic.
    socket.send(JSON.stringify({ subscribe: `${baseTopic}/miners/+/+` }));
    socket.send(JSON.stringify({ subscribe: `${baseTopic}/alerts/#` }));
  });
  socket.addEventListener("message", onMessage);
  socket.addEventListener("close", () => {
    setLink(false);
    setTimeout(connect, reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, RECONNECT_MAX_MS);
  });
}

async function start() {
  while (baseTopic === null) {
    try {
      baseTopic = (await getJson("/api/config")).base_topic;
    } catch (error) {
      console.warn("minerwatch: waiting for the api:", error);
      setLink(false);
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_MIN_MS));
    }
  }
  await loadSnapshot();
  connect();
  setInterval(() => {
    for (const miner of fleet.values()) renderAge(miner);
    if (alerts.size) renderAlerts();
  }, 1000);
}

start();
