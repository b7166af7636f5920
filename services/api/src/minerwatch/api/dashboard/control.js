// minerwatch miner page, the Control section: restart (after a confirm step), pause,
// resume, identify; the miner's settings beside their allowed ranges; autotune with its
// live progress (retained on {base}/miners/{id}/tune, over the WebSocket) and its last
// runs. Every change goes through the api with the session's CSRF token (common.request),
// and every answer's message is shown as it is, whatever its status: the collector and
// the api say what happened better than the page could guess.
//
// Visible to everyone; only operators and admins can use it, and the section says why its
// buttons are disabled otherwise.
import {
  answerText, button, canControl, clock, currentUser, el, isNum, isObject, num, onSession,
  request, resultOf, showSignIn, tsMs,
} from "./common.js";

// The number settings, in the order of the form: what the api calls them, their unit.
const NUMBERS = [
  { key: "frequency_mhz", unit: "MHz", name: "frequency" },
  { key: "core_voltage_mv", unit: "mV", name: "core voltage" },
  { key: "fan_percent", unit: "%", name: "fan speed" },
  { key: "temp_target_c", unit: "°C", name: "target temperature" },
];
const POOLS = ["primary", "fallback"];
const UNITS = Object.fromEntries(NUMBERS.map((f) => [f.key, f.unit]));
const NAMES = { ...Object.fromEntries(NUMBERS.map((f) => [f.key, f.name])), fan_mode: "fan mode", pools: "pools" };
const RUNS_SHOWN = 5;
// A running autotune reports after every change; quiet for this long (or with the
// collector not online), what it shows is no longer live.
const TUNE_QUIET_S = 120;

// What each action is, for a person: the button's words, while it runs, in the events.
export const ACTIONS = {
  restart: { done: "Restart", doing: "Restarting: waiting for the miner to come back…" },
  pause: { done: "Pause", doing: "Pausing…" },
  resume: { done: "Resume", doing: "Resuming…" },
  identify: { done: "Identify", doing: "Asking the miner to identify itself…" },
  configure: { done: "Settings change", doing: "Applying…" },
  tune: { done: "Autotune start", doing: "Starting autotune…" },
  tune_abort: { done: "Autotune abort", doing: "Aborting autotune…" },
};
const STATUS_WORDS = {
  ok: "Done", refused: "Refused", disabled: "Control is off", busy: "Busy", unknown: "Unknown miner",
  unsupported: "Not supported", failed: "Failed", unverified: "Not verified",
};
const GOOD = new Set(["ok"]);
const BAD = new Set(["failed", "unverified"]);
const TUNE_STATES = { running: "Running", done: "Done", aborted: "Aborted", failed: "Failed" };

const $ = (id) => document.getElementById(id);

// ---- pure: how results, settings and steps read --------------------------------------------

// A CommandResult's status, or what the HTTP status means when there is no result.
function statusOf(answer) {
  const { status } = answer;
  const result = resultOf(answer.body);
  if (result && STATUS_WORDS[result.status]) return result.status;
  if (answer.ok) return "ok";
  if (status === 401) return "signed-out";
  if (status === 403) return "forbidden";
  if (status === 504) return "no-answer";
  return "failed";
}

const OTHER_WORDS = { "signed-out": "Not signed in", forbidden: "Not allowed", "no-answer": "No answer" };

function toneOf(status) {
  if (GOOD.has(status)) return "good";
  if (BAD.has(status) || status === "no-answer") return "bad";
  return "warn";
}

function value(field, v) {
  if (v === null || v === undefined) return "–";
  if (field === "pools") return "changed";
  return UNITS[field] ? `${v} ${UNITS[field]}` : String(v);
}

function poolText(pool) {
  return isObject(pool) ? `${pool.url}${pool.user ? ` (${pool.user})` : ""}` : "none";
}

// "frequency 500 → 550 MHz, core voltage 1150 → 1200 mV" from a result's before/after.
export function describeChanges(result) {
  const changed = Array.isArray(result.changed) ? result.changed.filter((f) => typeof f === "string") : [];
  const before = isObject(result.before) ? result.before : {};
  const after = isObject(result.after) ? result.after : {};
  return changed.map((field) => {
    if (field === "pools" || field.startsWith("pools")) {
      const was = isObject(before.pools) ? before.pools : {};
      const now = isObject(after.pools) ? after.pools : {};
      const moved = POOLS.filter((k) => poolText(was[k]) !== poolText(now[k]) || field.endsWith(k));
      return moved.length ? moved.map((k) => `${k} pool ${poolText(was[k])} → ${poolText(now[k])}`).join(", ") : "pools";
    }
    const name = NAMES[field] || field.replace(/_/g, " ");
    if (!(field in before) && !(field in after)) return name;
    const unit = UNITS[field] ? ` ${UNITS[field]}` : "";
    const from = before[field] ?? "–";
    const to = after[field] ?? "–";
    return `${name} ${from} → ${to}${unit}`;
  }).join(", ");
}

function rangeText(limits, key) {
  const range = isObject(limits) ? limits[key] : undefined;
  if (range === undefined) return "";
  if (!isObject(range) || !isNum(range.min) || !isNum(range.max)) return "cannot be changed on this miner";
  const span = `allowed ${range.min}–${range.max} ${UNITS[key]}`;
  if (key !== "frequency_mhz" && key !== "core_voltage_mv") return span;
  const source = typeof limits.source === "string" && limits.source ? ` · ${limits.source}` : "";
  return `${span}${source}${limits.overclock ? " · overclock allowed" : ""}`;
}

const ratio = (v) => (isNum(v) ? `${num(v * 100, v < 0.01 ? 2 : 1)} %` : "–");

function stepRow(step, best) {
  const row = el("tr");
  row.dataset.index = String(step.index);
  row.dataset.stable = step.stable ? "true" : "false";
  if (best) row.classList.add("best");
  const rate = el("td", "num", isNum(step.hashrate_ths) ? `${num(step.hashrate_ths, 2)} TH/s` : "–");
  if (isNum(step.expected_ths)) rate.append(el("span", "sub", `of ${num(step.expected_ths, 2)} expected`));
  const temp = el("td", "num", isNum(step.temp_c) ? `${num(step.temp_c, 1)} °C` : "–");
  if (isNum(step.vr_temp_c)) temp.append(el("span", "sub", `VR ${num(step.vr_temp_c, 0)} °C`));
  const result = el("td", "result-cell");
  result.append(el("span", step.stable ? "verdict stable" : "verdict unstable", step.stable ? "stable" : "unstable"));
  if (!step.stable && step.reason) result.append(el("span", "sub", step.reason));
  if (best) result.append(el("span", "best-mark", "★ best"));
  row.append(
    el("td", "num", String(step.index)),
    el("td", "num", isNum(step.frequency_mhz) ? `${step.frequency_mhz} MHz` : "–"),
    el("td", "num", isNum(step.core_voltage_mv) ? `${step.core_voltage_mv} mV` : "–"),
    rate,
    el("td", "num", isNum(step.efficiency_jth) ? `${num(step.efficiency_jth, 1)} J/TH` : "–"),
    temp,
    el("td", "num", ratio(step.reject_ratio)),
    result,
  );
  return row;
}

function stepsOf(run) {
  return Array.isArray(run.steps) ? run.steps.filter((s) => isObject(s) && isNum(s.index)) : [];
}

function bestOf(run) {
  return isNum(run.best) ? stepsOf(run).find((s) => s.index === run.best) || stepsOf(run)[run.best] || null : null;
}

function stepsTable(run, caption) {
  const table = el("table", "compact steps");
  const cap = el("caption", "visually-hidden", caption);
  const head = el("thead");
  const headRow = el("tr");
  for (const [text, numeric] of [["#", 1], ["Frequency", 1], ["Voltage", 1], ["Hashrate", 1],
                                 ["Efficiency", 1], ["Temp", 1], ["Rejects", 1], ["Result", 0]]) {
    const th = el("th", numeric ? "num" : "", text);
    th.scope = "col";
    headRow.append(th);
  }
  head.append(headRow);
  const body = el("tbody");
  const best = bestOf(run);
  body.append(...stepsOf(run).map((step) => stepRow(step, best === step)));
  table.append(cap, head, body);
  const wrap = el("div", "table-wrap");
  wrap.append(table);
  return wrap;
}

function settingsText(settings) {
  if (!isObject(settings)) return "";
  return ["frequency_mhz", "core_voltage_mv"].filter((k) => isNum(settings[k]))
    .map((k) => `${settings[k]} ${UNITS[k]}`).join(" · ");
}

// ---- the section ----------------------------------------------------------------------------

export class Control {
  // `onCommand(result)`: a command's result came back (for the events list);
  // `stateOf()`: the miner's state now (online, idle, stale, offline, unknown).
  constructor({ minerId, live, onCommand, stateOf }) {
    this.path = `/api/miners/${encodeURIComponent(minerId)}`;
    this.live = live;
    this.onCommand = onCommand;
    this.stateOf = stateOf;
    this.settings = null; // as last read from the miner
    this.limits = null;
    this.readAt = null;
    this.reading = false;
    this.readProblem = "";
    this.busy = new Set(); // parts with a request in flight: actions, settings, tune
    this.tune = null; // the retained TuneProgress
    this.runs = new Map(); // run_id -> a finished run
    this.shownTune = "";
    this.wire();
    onSession(() => this.sessionChanged());
  }

  wire() {
    // A disabled button says why: the line on who may control this miner.
    for (const node of document.querySelectorAll("#control [data-action], #settings-apply, #tune-start, #tune-abort")) {
      node.setAttribute("aria-describedby", "control-access");
    }
    const restart = $("act-restart");
    restart.addEventListener("click", () => this.confirmRestart(true));
    $("restart-no").addEventListener("click", () => { this.confirmRestart(false); restart.focus(); });
    $("restart-yes").addEventListener("click", () => { this.confirmRestart(false); this.act("restart"); });
    $("restart-confirm").addEventListener("keydown", (event) => {
      if (event.key === "Escape") { this.confirmRestart(false); restart.focus(); }
    });
    for (const action of ["pause", "resume", "identify"]) {
      $(`act-${action}`).addEventListener("click", () => this.act(action));
    }
    const form = $("settings-form");
    form.addEventListener("submit", (event) => { event.preventDefault(); this.apply(); });
    $("settings-reset").addEventListener("click", () => { this.fill(); this.say("settings-result", "", ""); });
    $("settings-read").addEventListener("click", () => this.readSettings());
    $("set-fan_mode").addEventListener("change", () => this.sync());
    for (const { key } of NUMBERS) $(`set-${key}`).addEventListener("input", () => this.check(key));
    $("tune-form").addEventListener("submit", (event) => { event.preventDefault(); this.startTune(); });
    $("tune-abort").addEventListener("click", () => this.abortTune());
  }

  async start() {
    this.sessionChanged();
    await this.loadRuns();
  }

  sessionChanged() {
    this.renderAccess();
    if (!canControl() && this.settings) {
      // Signed out (or a viewer now): what was read is not theirs to see.
      this.settings = null;
      this.limits = null;
      this.readAt = null;
      this.fill();
    }
    if (canControl() && !this.settings && !this.reading) this.readSettings();
    else this.renderNote();
    this.sync();
  }

  renderAccess() {
    const user = currentUser();
    const access = $("control-access");
    if (canControl()) {
      access.replaceChildren(`As ${user.name} (${user.role}) you can control this miner.`);
    } else if (user) {
      access.replaceChildren(`Signed in as ${user.name} (${user.role}): only operators and admins can control miners.`);
    } else {
      access.replaceChildren("Sign in as an operator or admin to control this miner. ",
                             button("Sign in", "", () => showSignIn()));
    }
    $("control").classList.toggle("locked", !canControl());
  }

  // Every control enabled or not, from the role, what is in flight and what the miner says.
  sync() {
    const allowed = canControl();
    const acting = this.busy.has("actions");
    for (const node of document.querySelectorAll("#control [data-action], #restart-yes")) {
      node.disabled = !allowed || acting;
    }
    const haveSettings = allowed && !!this.settings && !this.busy.has("settings");
    const mode = $("set-fan_mode");
    for (const { key } of NUMBERS) {
      const limit = isObject(this.limits) ? this.limits[key] : undefined;
      let off = !haveSettings || limit === null;
      if (key === "fan_percent" && mode.value === "auto") off = true; // the firmware sets it
      if (key === "temp_target_c" && mode.value === "manual") off = true; // only the automatic fan aims
      $(`set-${key}`).disabled = off;
    }
    mode.disabled = !haveSettings || !this.settings.fan_mode;
    for (const node of document.querySelectorAll("#settings-form .pool input")) {
      node.disabled = !haveSettings || !(this.settings && "pools" in this.settings);
    }
    $("settings-apply").disabled = !haveSettings;
    $("settings-reset").disabled = !haveSettings;
    $("settings-read").disabled = !allowed || this.reading;
    const running = !!this.tune && this.tune.state === "running";
    const tuning = this.busy.has("tune");
    $("tune-objective").disabled = !allowed || running || tuning;
    $("tune-start").disabled = !allowed || running || tuning;
    $("tune-abort").disabled = !allowed || !running || tuning;
  }

  // An answer, or a line of our own, in one of the result lines: its tone as a class.
  say(id, tone, text, detail) {
    const node = $(id);
    delete node.dataset.status;
    node.className = `result${tone ? ` result-${tone}` : ""}`;
    node.replaceChildren(text);
    if (detail) node.append(el("span", "sub", detail));
  }

  sayAnswer(id, what, answer) {
    const status = statusOf(answer);
    const word = STATUS_WORDS[status] || OTHER_WORDS[status] || "Failed";
    const changes = status === "ok" ? describeChanges(resultOf(answer.body) || {}) : "";
    this.say(id, toneOf(status), `${what}: ${word}. ${answerText(answer)}`, changes ? `Changed: ${changes}` : "");
    $(id).dataset.status = status;
  }

  async command(part, method, path, body) {
    this.busy.add(part);
    this.sync();
    try {
      return await request(method, path, body);
    } catch (error) {
      return { ok: false, status: 0, body: { detail: error.message } };
    } finally {
      this.busy.delete(part);
      this.sync();
    }
  }

  // A result of an audited command: it belongs in the events list.
  heard(answer) {
    const result = resultOf(answer.body);
    if (result && typeof result.action === "string" && typeof result.ts === "string"
        && result.action !== "settings") this.onCommand(result);
  }

  // ---- actions ------------------------------------------------------------------------------

  confirmRestart(open) {
    $("restart-confirm").hidden = !open;
    $("act-restart").setAttribute("aria-expanded", String(open));
    if (open) $("restart-no").focus();
  }

  async act(action) {
    const what = ACTIONS[action];
    this.say("action-result", "pending", what.doing);
    const answer = await this.command("actions", "POST", `${this.path}/actions/${action}`);
    this.sayAnswer("action-result", what.done, answer);
    this.heard(answer);
  }

  // ---- settings -----------------------------------------------------------------------------

  async readSettings() {
    if (!canControl()) return;
    this.reading = true;
    this.readProblem = "";
    this.renderNote();
    this.sync();
    const answer = await this.command("read", "GET", `${this.path}/settings`);
    this.reading = false;
    if (!canControl()) { // signed out meanwhile
      this.sessionChanged();
      return;
    }
    const body = answer.body;
    if (answer.ok && isObject(body) && isObject(body.settings)) {
      this.settings = body.settings;
      this.limits = isObject(body.limits) ? body.limits : null;
      this.readAt = typeof body.ts === "string" ? body.ts : new Date().toISOString();
      this.fill();
    } else {
      this.readProblem = `Could not read the settings: ${answerText(answer)}`;
      if (isObject(body) && isObject(body.limits)) this.limits = body.limits;
    }
    this.renderNote();
    this.sync();
  }

  // What the settings shown are: read when, and whether the miner is live now.
  renderNote() {
    const note = $("settings-note");
    let text;
    if (!canControl()) text = "Operators and admins see the miner's settings here.";
    else if (this.reading) text = "Reading the settings from the miner…";
    else if (this.readProblem) text = this.readProblem;
    else if (this.settings) {
      const state = this.stateOf();
      text = `Read from the miner at ${clock(this.readAt)}.`;
      if (state === "stale" || state === "offline") text += ` The miner is ${state} now: they may have changed since.`;
    } else text = "";
    if (note.textContent !== text) note.textContent = text;
    note.classList.toggle("problem", !!this.readProblem);
  }

  ranges() {
    for (const { key } of NUMBERS) {
      const input = $(`set-${key}`);
      const range = isObject(this.limits) ? this.limits[key] : null;
      if (isObject(range) && isNum(range.min) && isNum(range.max)) {
        input.min = String(range.min);
        input.max = String(range.max);
      } else {
        input.removeAttribute("min");
        input.removeAttribute("max");
      }
      $(`range-${key}`).textContent = rangeText(this.limits, key);
      this.check(key);
    }
  }

  // The form as read: every value, every range.
  fill() {
    const s = this.settings || {};
    for (const { key } of NUMBERS) {
      const input = $(`set-${key}`);
      input.value = isNum(s[key]) ? String(s[key]) : "";
      input.placeholder = this.settings && !isNum(s[key]) ? "not reported" : "";
    }
    $("set-fan_mode").value = s.fan_mode === "manual" ? "manual" : "auto";
    const pools = isObject(s.pools) ? s.pools : {};
    for (const key of POOLS) {
      const pool = isObject(pools[key]) ? pools[key] : {};
      $(`set-${key}-url`).value = typeof pool.url === "string" ? pool.url : "";
      $(`set-${key}-user`).value = typeof pool.user === "string" ? pool.user : "";
      $(`set-${key}-password`).value = "";
    }
    this.ranges();
    this.sync();
  }

  // A value outside its range is marked at once; the api still has the last word.
  check(key) {
    const input = $(`set-${key}`);
    const raw = input.value.trim();
    const v = Number(raw);
    const range = isObject(this.limits) ? this.limits[key] : null;
    const bad = raw !== "" && (!Number.isInteger(v)
      || (isObject(range) && (v < range.min || v > range.max)));
    input.setAttribute("aria-invalid", String(bad));
    $(`range-${key}`).classList.toggle("out", bad);
  }

  // Only what differs from what was read; problems the api would refuse anyway.
  changes() {
    const change = {};
    const problems = [];
    const s = this.settings || {};
    for (const { key, name } of NUMBERS) {
      const input = $(`set-${key}`);
      const raw = input.value.trim();
      if (input.disabled || raw === "") continue;
      const v = Number(raw);
      if (!Number.isInteger(v)) problems.push(`the ${name} must be a whole number`);
      else if (v !== s[key]) change[key] = v;
    }
    const mode = $("set-fan_mode");
    if (!mode.disabled && mode.value !== s.fan_mode) change.fan_mode = mode.value;
    const pools = {};
    const was = isObject(s.pools) ? s.pools : {};
    for (const key of POOLS) {
      if ($(`set-${key}-url`).disabled) continue;
      const url = $(`set-${key}-url`).value.trim();
      const user = $(`set-${key}-user`).value.trim();
      const password = $(`set-${key}-password`).value;
      const old = isObject(was[key]) ? was[key] : {};
      if (url === (old.url || "") && user === (old.user || "") && !password) continue;
      if (!url) {
        problems.push(`the ${key} pool needs a URL`);
        continue;
      }
      pools[key] = { url, user, ...(password ? { password } : {}) };
    }
    if (Object.keys(pools).length) change.pools = pools;
    return { change, problems };
  }

  async apply() {
    if (!canControl() || !this.settings) return;
    const { change, problems } = this.changes();
    if (problems.length) {
      this.say("settings-result", "warn", `Not sent: ${problems.join("; ")}.`);
      return;
    }
    const fields = Object.keys(change);
    if (!fields.length) {
      this.say("settings-result", "", "Nothing to apply: no setting differs from what the miner has.");
      return;
    }
    this.say("settings-result", "pending", `Applying ${fields.map((f) => NAMES[f] || f).join(", ")}…`);
    const answer = await this.command("settings", "PATCH", `${this.path}/settings`, change);
    this.sayAnswer("settings-result", "Settings", answer);
    this.heard(answer);
    const body = answer.body;
    if (!isObject(body)) return;
    if (isObject(body.limits)) {
      this.limits = body.limits;
      this.ranges();
    }
    if (answer.ok && isObject(body.after)) {
      this.settings = body.after;
      this.readAt = typeof body.ts === "string" ? body.ts : new Date().toISOString();
      this.fill();
      this.renderNote();
    }
  }

  // ---- autotune -----------------------------------------------------------------------------

  async startTune() {
    const objective = $("tune-objective").value === "hashrate" ? "hashrate" : "efficiency";
    this.say("tune-result", "pending", ACTIONS.tune.doing);
    const answer = await this.command("tune", "POST", `${this.path}/tune`, { objective });
    this.sayAnswer("tune-result", "Autotune", answer);
    this.heard(answer);
  }

  async abortTune() {
    this.say("tune-result", "pending", ACTIONS.tune_abort.doing);
    const answer = await this.command("tune", "DELETE", `${this.path}/tune`);
    this.sayAnswer("tune-result", "Abort", answer);
    this.heard(answer);
  }

  // The retained progress of the current (or last) run; "" when it was cleared.
  onTune(payload) {
    if (!isObject(payload) || typeof payload.run_id !== "string") {
      this.tune = null;
    } else {
      const current = this.tune;
      if (current && current.run_id === payload.run_id && tsMs(payload.ts) < tsMs(current.ts)) return;
      const ended = !!current && current.state === "running" && payload.state !== "running";
      this.tune = payload;
      if (payload.state !== "running") {
        this.runs.set(payload.run_id, payload);
        this.renderRuns();
      }
      // Its best step is on the miner now (or its old settings, again): read them back.
      if (ended && canControl() && this.settings) this.readSettings();
    }
    this.shownTune = "";
    this.renderTune();
    this.sync();
  }

  // Whether the run shown is still heard from; a dead "running" must not look live.
  quiet(nowMs) {
    const t = this.tune;
    if (!t || t.state !== "running") return false;
    if (this.live.collector() !== "online") return true;
    const limit = Math.max(TUNE_QUIET_S, 4 * this.live.staleAfterS);
    return !((nowMs - tsMs(t.ts)) / 1000 <= limit);
  }

  renderTune() {
    const t = this.tune;
    const box = $("tune-live");
    box.hidden = !t;
    if (!t) return;
    const nowMs = Date.now();
    const quiet = this.quiet(nowMs);
    const key = `${t.run_id}|${t.ts}|${t.state}|${quiet}|${this.live.collector()}`;
    if (key === this.shownTune) return;
    this.shownTune = key;
    box.classList.toggle("not-live", quiet);
    box.dataset.state = t.state;
    const state = $("tune-state");
    const parts = [el("span", `tune-badge tune-${t.state}`, TUNE_STATES[t.state] || t.state)];
    parts.push(el("span", "objective", t.objective === "hashrate" ? "for hashrate" : "for efficiency"));
    if (t.phase) parts.push(el("span", "phase", t.phase));
    if (quiet) {
      const why = this.live.collector() !== "online" ? `the collector is ${this.live.collector()}` : "no progress for too long";
      parts.push(el("span", "stale-note", `Not live: last heard at ${clock(t.ts)} (${why})`));
    }
    const started = el("span", "sub", `started ${clock(t.started)}${t.by ? ` by ${t.by}` : ""}`);
    parts.push(started);
    if (t.message) parts.push(el("span", "sub tune-message", t.message));
    if (isObject(t.applied)) parts.push(el("span", "sub", `Applied: ${settingsText(t.applied) || "its settings"}`));
    state.replaceChildren(...parts);
    const progress = $("tune-progress");
    const share = isNum(t.progress) ? Math.min(1, Math.max(0, t.progress)) : 0;
    progress.value = Math.round(share * 100);
    $("tune-percent").textContent = `${Math.round(share * 100)} %`;
    const best = bestOf(t);
    document.querySelector("#tune-steps tbody").replaceChildren(
      ...stepsOf(t).map((step) => stepRow(step, best === step)));
  }

  async loadRuns() {
    let answer;
    try {
      answer = await request("GET", `${this.path}/tune-runs`);
    } catch (error) {
      console.warn("minerwatch: could not load the autotune runs:", error);
      return;
    }
    if (!answer.ok || !Array.isArray(answer.body)) {
      if (answer.status !== 404 && answer.status !== 401) console.warn("minerwatch: autotune runs:", answerText(answer));
      return;
    }
    for (const run of answer.body) {
      if (isObject(run) && typeof run.run_id === "string" && !this.runs.has(run.run_id)) this.runs.set(run.run_id, run);
    }
    this.renderRuns();
  }

  renderRuns() {
    const done = [...this.runs.values()].filter((run) => run.state !== "running")
      .sort((a, b) => tsMs(b.started) - tsMs(a.started));
    while (this.runs.size > RUNS_SHOWN * 4 && done.length > RUNS_SHOWN) this.runs.delete(done.pop().run_id);
    const items = done.slice(0, RUNS_SHOWN).map((run) => {
      const item = el("li", `run run-${run.state}`);
      item.dataset.run = run.run_id;
      const details = el("details");
      const summary = el("summary");
      const best = bestOf(run);
      summary.append(
        el("span", "when", clock(run.started)),
        el("span", `tune-badge tune-${run.state}`, TUNE_STATES[run.state] || String(run.state)),
        el("span", "", run.objective === "hashrate" ? "for hashrate" : "for efficiency"),
      );
      if (best) {
        const eff = isNum(best.efficiency_jth) ? ` · ${num(best.efficiency_jth, 1)} J/TH` : "";
        summary.append(el("span", "", `best ${best.frequency_mhz} MHz · ${best.core_voltage_mv} mV${eff}`));
      }
      if (run.by) summary.append(el("span", "sub-inline", `by ${run.by}`));
      details.append(summary);
      if (run.message) details.append(el("p", "run-message", run.message));
      if (stepsOf(run).length) details.append(stepsTable(run, `Steps of the run started ${clock(run.started)}`));
      item.append(details);
      return item;
    });
    $("tune-runs").replaceChildren(...items);
    $("no-runs").hidden = items.length > 0;
  }

  // Every second: a run and settings turn not-live by time alone.
  tick() {
    this.renderTune();
    this.renderNote();
  }
}
