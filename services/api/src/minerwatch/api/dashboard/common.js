// What both pages (the fleet at /, a miner at /miners/{id}) share: formatting, the rule of
// what is live, DOM helpers, HTTP (every change with the session's CSRF token), the
// sign-in (header area and form), the WebSocket link with its banner, alerts and mutes.
// Plain JS modules, no build step. Values are written with textContent only (never
// innerHTML), so nothing a miner reports (a label, a reason, an alert message) can inject
// markup.

export const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 15000;
const HEALTH_EVERY_MS = 30000; // /healthz again: broker and database state, services' since
const DEFAULT_STALE_AFTER_S = 30; // 3 x the collector's default poll interval
const MUTE_FOR_S = 3600;
const NOTICE_MS = 8000;

// The services whose outage the banner reports, and what it means for the page.
const SERVICES = [
  ["collector", "The collector", "the numbers below are not live"],
  ["store", "The store", "history is not being recorded"],
  ["alerts", "The alerts service", "no alerts are being raised or sent"],
];

// ---- formatting ---------------------------------------------------------------------------

export const isNum = (v) => typeof v === "number" && Number.isFinite(v);
export const isObject = (v) => v !== null && typeof v === "object";
export const tsMs = (ts) => (typeof ts === "string" ? Date.parse(ts) : NaN);

// One formatter per number of digits: toLocaleString with options builds a new one at every
// call, which a thousand-row table updating live cannot afford.
const FORMATS = new Map();

export function num(value, digits) {
  let format = FORMATS.get(digits);
  if (!format) {
    format = new Intl.NumberFormat(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
    FORMATS.set(digits, format);
  }
  return format.format(value);
}

export function hashrate(ths) {
  if (!isNum(ths)) return ["–", ""];
  if (ths >= 1000) return [num(ths / 1000, 2), "PH/s"];
  return [num(ths, ths >= 100 ? 1 : 2), "TH/s"];
}

export function power(watts) {
  if (!isNum(watts)) return ["–", ""];
  return watts >= 10000 ? [num(watts / 1000, 1), "kW"] : [num(watts, 0), "W"];
}

export function duration(seconds) {
  if (seconds < 60) return `${Math.max(0, Math.round(seconds))} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  return `${Math.floor(seconds / 86400)} d ${Math.floor((seconds % 86400) / 3600)} h`;
}

export function age(ts) {
  const ms = tsMs(ts);
  if (Number.isNaN(ms)) return "–";
  const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

// "10:02" today, "Mar 3, 10:02" another day; "an unknown time" when there is none.
export function clock(ts) {
  const ms = tsMs(ts);
  if (Number.isNaN(ms)) return "an unknown time";
  const when = new Date(ms);
  const time = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  if (when.toDateString() === new Date().toDateString()) return time;
  return `${when.toLocaleDateString([], { month: "short", day: "numeric" })}, ${time}`;
}

export const capitalized = (word) => word.charAt(0).toUpperCase() + word.slice(1);

// ---- what is true about a miner (pure) ----------------------------------------------------

// The latest of status.last_seen and the sample's ts: the last time live data came.
export function lastSeen(status, sample) {
  const times = [status && status.last_seen, sample && sample.ts].filter((ts) => !Number.isNaN(tsMs(ts)));
  if (!times.length) return null;
  return times.reduce((a, b) => (tsMs(b) > tsMs(a) ? b : a));
}

// {state: online|idle|offline|stale|unknown, since: ts|null}, by the api's rule (presence.py).
export function minerState(status, sample, collectorState, nowMs, staleAfter) {
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

// Why a miner is not live, in a few words.
export function notLiveReason(state, status, collector) {
  if (state === "stale") return collector === "online" ? "no sample for too long" : `the collector is ${collector}`;
  if (state === "offline") return (status && status.reason) || null;
  return null;
}

// Newer wins: the HTTP snapshot and the WebSocket replay may arrive in either order.
export function newer(current, incoming, key) {
  return !current || !incoming[key] || !current[key] || tsMs(incoming[key]) >= tsMs(current[key]);
}

// ---- DOM helpers --------------------------------------------------------------------------

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function button(text, className, onClick) {
  const node = el("button", className, text);
  node.type = "button";
  node.addEventListener("click", onClick);
  return node;
}

// A value with its unit in a smaller, muted span: "62.5 °C".
export function setValue(cell, value, unit) {
  cell.replaceChildren(document.createTextNode(value));
  if (unit && value !== "–") cell.append(el("span", "unit", unit));
}

export function setSub(cell, main, sub) {
  cell.replaceChildren(document.createTextNode(main));
  if (sub) cell.append(el("span", "sub", sub));
}

// Restarts the highlight by switching between two identical animations: reading a layout
// property to restart one would force a layout of the whole table for every new sample.
export function flash(cell) {
  const again = cell.classList.contains("flash");
  cell.classList.toggle("flash", !again);
  cell.classList.toggle("flash-again", again);
}

let noticeTimer = null;

// A one-line message about an action that failed (or worked, where that is not visible).
export function notify(text) {
  const notice = document.getElementById("notice");
  notice.textContent = text;
  notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { notice.hidden = true; }, NOTICE_MS);
}

// ---- HTTP ---------------------------------------------------------------------------------

// A read: rejects with the HTTP status as `status` (401: the api wants a sign-in first).
export async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) {
    if (response.status === 401 && session.user) {
      setUser(null); // the session ran out while the page was open
      showSignIn("Your sign-in has ended: sign in again to go on.");
    }
    const error = new Error(`${path}: HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

// One request with the session's CSRF token on every change; resolves to
// {ok, status, body} whatever the status (control answers carry a result on errors too),
// rejects only when the api cannot be reached.
export async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  const options = { method, headers, cache: "no-store" };
  if (method !== "GET" && method !== "HEAD" && session.user) headers["X-CSRF-Token"] = session.user.csrf;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
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
  return { ok: response.ok, status: response.status, body: answer };
}

// A command's result in an answer: the body itself when it succeeded, its `result` when
// not (the api answers {status_code, detail, result, limits} then).
export function resultOf(body) {
  if (isObject(body) && isObject(body.result)) return body.result;
  return isObject(body) && typeof body.status === "string" ? body : null;
}

// What an answer says, in one line: a command's message, else the api's detail.
export function answerText(answer) {
  const { body, status } = answer;
  const result = resultOf(body);
  if (result && typeof result.message === "string" && result.message) return result.message;
  if (isObject(body) && typeof body.detail === "string" && body.detail) return body.detail;
  if (status === 401) return "sign in first";
  if (status === 403) return "your role may not do this";
  return `HTTP ${status}`;
}

// A change through the api; resolves to the answer's JSON, rejects with its one-line detail.
export async function send(method, path, body) {
  const answer = await request(method, path, body);
  if (!answer.ok) {
    if (answer.status === 401) showSignIn("Changes need a sign-in: an access token of role operator or admin.");
    const error = new Error(answerText(answer));
    error.status = answer.status;
    throw error;
  }
  return answer.body;
}

// ---- the session: who is signed in, and the CSRF token every change sends ----------------
//
// The session itself is an HttpOnly cookie; the page keeps only the CSRF token, in memory,
// and asks GET /api/session for it again on every load. `[api] auth = "token"`: every read
// needs the session, and a 401 puts the sign-in form up; `"lan"`: reads are open, changes
// need a session of a role that may make them. GET /api/session says which (`auth`), signed
// in or not.

const ROLES = ["viewer", "operator", "admin"];
const session = { user: null, mode: null, listeners: [], waiting: [], required: false };

export const currentUser = () => session.user;
// Operators and admins act on miners; viewers only look.
export const canControl = () => !!session.user && ROLES.indexOf(session.user.role) >= 1;
export const onSession = (listener) => session.listeners.push(listener);

function userOf(body) {
  if (!isObject(body) || typeof body.name !== "string" || typeof body.csrf !== "string") return null;
  if (body.auth === "token" || body.auth === "lan") session.mode = body.auth;
  return { name: body.name, role: ROLES.includes(body.role) ? body.role : "viewer", csrf: body.csrf };
}

function setUser(user) {
  session.user = user;
  renderSession();
  for (const listener of session.listeners) listener(user);
}

// Who is signed in, from the cookie (null: nobody, or an api without sign-in).
export async function loadSession() {
  let answer;
  try {
    answer = await request("GET", "/api/session");
  } catch (error) {
    console.warn("minerwatch: could not load /api/session:", error);
    renderSession();
    return session.user;
  }
  if (isObject(answer.body) && (answer.body.auth === "token" || answer.body.auth === "lan")) {
    session.mode = answer.body.auth;
  }
  setUser(answer.ok ? userOf(answer.body) : null);
  return session.user;
}

async function signIn(token) {
  const answer = await request("POST", "/api/session", { token });
  const user = answer.ok ? userOf(answer.body) : null;
  if (!user) {
    throw new Error(answer.status === 401 || answer.status === 403
      ? `Not signed in: ${answerText(answer).replace(/^sign in first$/, "that token is not valid")}`
      : `Not signed in: ${answerText(answer)}`);
  }
  return user;
}

async function signOut() {
  let answer;
  try {
    answer = await request("DELETE", "/api/session");
  } catch (error) {
    notify(`Could not sign out: ${error.message}`);
    return;
  }
  if (!answer.ok && answer.status !== 401) {
    notify(`Could not sign out: ${answerText(answer)}`);
    return;
  }
  setUser(null);
  // Where reads need the session too, the page's data is no longer for this browser: the
  // page starts again, at the sign-in form.
  if (session.mode === "token") location.reload();
}

// Resolves once someone has signed in; meanwhile the page shows the sign-in form alone.
export function requireSignIn(why) {
  session.required = true;
  showSignIn(why || "This minerwatch needs a sign-in to show anything.");
  return new Promise((resolve) => session.waiting.push(resolve));
}

// The header's "Sign in" / "Signed in as NAME (role) · Sign out".
function renderSession() {
  const area = sessionArea();
  if (session.user) {
    const { name, role } = session.user;
    const who = el("span", "who");
    who.append("Signed in as ", el("strong", "", name), ` (${role})`);
    area.replaceChildren(who, el("span", "sep", " · "), button("Sign out", "quiet", signOut));
  } else {
    area.replaceChildren(button("Sign in", "quiet", () => showSignIn()));
  }
}

function sessionArea() {
  let area = document.getElementById("session");
  if (!area) {
    area = el("div", "session");
    area.id = "session";
    const link = document.getElementById("link");
    link.before(area);
  }
  return area;
}

// The sign-in form: an access token (`minerwatch-api token create`) and a button.
function signInForm() {
  let section = document.getElementById("signin");
  if (section) return section;
  section = el("section", "signin");
  section.id = "signin";
  section.hidden = true;
  section.setAttribute("aria-labelledby", "signin-title");
  const form = el("form", "signin-form");
  form.noValidate = true;
  const title = el("h2", "", "Sign in");
  title.id = "signin-title";
  const why = el("p", "cover");
  why.id = "signin-why";
  const label = el("label", "field");
  const input = el("input");
  input.id = "signin-token";
  input.name = "token";
  input.type = "password";
  input.autocomplete = "current-password";
  input.spellcheck = false;
  input.setAttribute("aria-describedby", "signin-why signin-error");
  label.append(el("span", "field-label", "Access token"), input);
  const submit = el("button", "primary", "Sign in");
  submit.type = "submit";
  const cancel = button("Cancel", "quiet", () => { section.hidden = true; });
  cancel.id = "signin-cancel";
  const actions = el("div", "form-actions");
  actions.append(submit, cancel);
  const problem = el("p", "error");
  problem.id = "signin-error";
  problem.setAttribute("role", "alert");
  form.append(title, why, label, actions, problem);
  section.append(form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      problem.textContent = "Enter your access token.";
      input.focus();
      return;
    }
    submit.disabled = true;
    problem.textContent = "";
    try {
      const user = await signIn(token);
      input.value = "";
      section.hidden = true;
      document.body.classList.remove("needs-signin");
      session.required = false;
      setUser(user);
      for (const resolve of session.waiting.splice(0)) resolve(user);
    } catch (error) {
      problem.textContent = error.message;
      input.select();
    } finally {
      submit.disabled = false;
    }
  });
  document.querySelector("main").prepend(section);
  return section;
}

export function showSignIn(why) {
  const section = signInForm();
  document.getElementById("signin-why").textContent = why
    || "With an access token of role operator or admin you can also control miners.";
  document.getElementById("signin-cancel").hidden = session.required;
  document.body.classList.toggle("needs-signin", session.required);
  section.hidden = false;
  const input = document.getElementById("signin-token");
  input.focus();
  section.scrollIntoView({ block: "nearest" });
}

// ---- the link to the api, services and the banner -----------------------------------------

// The WebSocket link and what the page knows about the services: `onService` is called
// when a service changes state (miners may turn stale), `onTopic(levels, payload, topic)`
// for every other message under the base topic.
export class Live {
  constructor({ filters, onTopic, onService }) {
    this.filters = filters;
    this.onTopic = onTopic;
    this.onService = onService || (() => {});
    this.base = null;
    this.staleAfterS = DEFAULT_STALE_AFTER_S;
    this.pollIntervalS = DEFAULT_STALE_AFTER_S / 3;
    this.services = new Map(); // service -> {state: online|offline|unknown, since: ts|null}
    this.health = { broker: "up", database: "up", since: null };
    this.up = false;
    this.downSince = null;
    this.serviceMessages = 0; // service frames seen; a /healthz answer older than one loses
    this.delay = RECONNECT_MIN_MS;
  }

  collector() {
    return (this.services.get("collector") || { state: "unknown" }).state;
  }

  // /api/config until the api answers: the base topic and when a sample is stale.
  async configure() {
    await loadSession();
    while (this.base === null) {
      try {
        const config = await getJson("/api/config");
        if (isNum(config.poll_interval_s) && config.poll_interval_s > 0) this.pollIntervalS = config.poll_interval_s;
        if (isNum(config.stale_after_s) && config.stale_after_s > 0) this.staleAfterS = config.stale_after_s;
        else this.staleAfterS = 3 * this.pollIntervalS;
        this.base = config.base_topic;
      } catch (error) {
        if (error.status === 401) {
          await requireSignIn(); // `[api] auth = "token"`: nothing is shown without it
          continue;
        }
        console.warn("minerwatch: waiting for the api:", error);
        this.setLink(false);
        await new Promise((resolve) => setTimeout(resolve, RECONNECT_MIN_MS));
      }
    }
    await this.loadHealth();
    setInterval(() => this.loadHealth(), HEALTH_EVERY_MS);
  }

  setService(name, state, since) {
    const current = this.services.get(name);
    if (current && current.state === state && (since === undefined || since === current.since)) return false;
    this.services.set(name, { state, since: since === undefined ? new Date().toISOString() : since });
    return true;
  }

  changed() {
    this.renderBanner();
    this.onService();
  }

  renderBanner() {
    const lines = [];
    if (!this.up && this.downSince) {
      lines.push(["api", `The connection to the api is down since ${clock(this.downSince)}: the numbers below are not live.`]);
    } else if (this.health.broker === "down") {
      lines.push(["broker", `The api has lost the broker since ${clock(this.health.since)}: the numbers below are not live.`]);
    }
    for (const [name, who, meaning] of SERVICES) {
      const seen = this.services.get(name);
      if (seen && seen.state === "offline") {
        lines.push([name, `${who} is offline since ${clock(seen.since)}: ${meaning}.`]);
      } else if (name === "collector" && seen && seen.state === "unknown" && this.health.broker === "up") {
        lines.push([name, "The collector has not reported that it is running: the numbers below may not be live."]);
      }
    }
    if (this.health.database === "down") lines.push(["database", "The api cannot reach the database: history is not available."]);
    const banner = document.getElementById("banner");
    banner.replaceChildren(...lines.map(([name, text]) => {
      const line = el("p", "", text);
      line.dataset.service = name;
      return line;
    }));
    banner.hidden = lines.length === 0;
  }

  async loadHealth() {
    const seenBefore = this.serviceMessages;
    let body;
    try {
      const response = await fetch("/healthz", { headers: { Accept: "application/json" }, cache: "no-store" });
      body = await response.json(); // 503 (broker or database down) has the same body
    } catch (error) {
      console.warn("minerwatch: could not load /healthz:", error);
      return;
    }
    if (!isObject(body)) return;
    const { health } = this;
    const brokerWas = health.broker;
    health.broker = body.broker === "down" ? "down" : "up";
    health.database = body.database === "down" ? "down" : "up";
    if (health.broker === "down" && brokerWas !== "down") health.since = new Date().toISOString();
    let changed = brokerWas !== health.broker;
    // A service frame that came while this answer was on its way is newer than the answer.
    if (isObject(body.services) && this.serviceMessages === seenBefore) {
      for (const [name] of SERVICES) {
        const seen = body.services[name];
        if (!isObject(seen)) continue;
        const state = seen.state === "online" || seen.state === "offline" ? seen.state : "unknown";
        changed = this.setService(name, state, typeof seen.since === "string" ? seen.since : null) || changed;
      }
    }
    if (changed) this.changed();
    else this.renderBanner();
  }

  setLink(up) {
    const link = document.getElementById("link");
    link.className = `link ${up ? "link-up" : "link-down"}`;
    link.textContent = up ? "live" : "reconnecting…";
    if (up !== this.up || (!up && !this.downSince)) this.downSince = up ? null : new Date().toISOString();
    this.up = up;
    this.renderBanner();
  }

  onMessage(event) {
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
    const { base } = this;
    if (typeof message.topic !== "string" || !message.topic.startsWith(`${base}/`)) return;
    const levels = message.topic.slice(base.length + 1).split("/");
    if (levels.length === 3 && levels[0] === "services" && levels[2] === "status") {
      this.serviceMessages += 1;
      const payload = message.payload;
      const state = payload === "online" || payload === "offline" ? payload : "unknown";
      if (this.setService(levels[1], state)) this.changed();
      return;
    }
    this.onTopic(levels, message.payload, message.topic);
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws`);
    socket.addEventListener("open", () => {
      this.delay = RECONNECT_MIN_MS;
      this.setLink(true);
      // The server first replays the current (retained) state of every matching topic.
      for (const filter of [...this.filters, "services/+/status"]) {
        socket.send(JSON.stringify({ subscribe: `${this.base}/${filter}` }));
      }
      this.loadHealth(); // since when each service is in its state, as the api saw it
    });
    socket.addEventListener("message", (event) => this.onMessage(event));
    socket.addEventListener("close", () => {
      this.setLink(false);
      setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, RECONNECT_MAX_MS);
    });
  }
}

// ---- alerts and mutes ---------------------------------------------------------------------

// The firing alerts and the mutes in force, as the WebSocket and the api tell them; a list
// element shows them (optionally only one miner's) with Mute / Unmute.
export class AlertList {
  constructor({ list, section, count, labelOf, only }) {
    this.alerts = new Map(); // alert topic -> AlertEvent (firing only)
    this.mutes = new Map(); // mute id -> Mute
    this.list = list;
    this.section = section;
    this.count = count;
    this.labelOf = labelOf;
    this.only = only || null; // a miner id: show its alerts alone
  }

  update(topic, value) {
    if (isObject(value) && value.state === "firing") this.alerts.set(topic, value);
    else this.alerts.delete(topic); // resolved, a one-off event, or the retained alert was cleared
    this.render();
  }

  updateMute(muteId, value) {
    if (isObject(value) && typeof value.until === "string") this.mutes.set(muteId, value);
    else this.mutes.delete(muteId); // lifted, or expired and cleared
    this.render();
  }

  mutesOf(alert, nowMs) {
    return [...this.mutes.values()].filter((mute) =>
      (mute.miner_id == null || mute.miner_id === alert.miner_id)
      && (mute.rule == null || mute.rule === alert.rule)
      && tsMs(mute.until) > nowMs);
  }

  async mute(alert) {
    try {
      const created = await send("POST", "/api/alerts/mute",
                                 { miner_id: alert.miner_id, rule: alert.rule, for_s: MUTE_FOR_S });
      if (isObject(created) && typeof created.id === "string") this.mutes.set(created.id, created);
      this.render();
    } catch (error) {
      notify(`Could not mute ${alert.rule} of ${this.labelOf(alert.miner_id) || alert.miner_id}: ${error.message}`);
    }
  }

  async unmute(muteId) {
    try {
      await send("DELETE", `/api/alerts/mutes/${encodeURIComponent(muteId)}`);
      this.mutes.delete(muteId);
      this.render();
    } catch (error) {
      notify(`Could not unmute: ${error.message}`);
    }
  }

  item(alert, nowMs) {
    const item = el("li");
    item.dataset.miner = alert.miner_id;
    item.dataset.rule = alert.rule;
    const label = this.labelOf(alert.miner_id) || alert.label || alert.miner_id;
    const who = el("span", "who");
    if (!this.only) {
      const link = el("a", "", label);
      link.href = `/miners/${encodeURIComponent(alert.miner_id)}`;
      const strong = el("strong");
      strong.append(link);
      who.append(strong);
      if (label !== alert.miner_id) who.append(" ", el("span", "id", alert.miner_id));
    }
    item.append(
      el("span", `severity severity-${alert.severity}`, alert.severity),
      who,
      el("span", "message", alert.message),
      el("span", "when", `since ${clock(alert.since || alert.ts)}`),
    );
    const held = this.mutesOf(alert, nowMs);
    item.classList.toggle("muted", held.length > 0);
    if (held.length) {
      const until = held.reduce((a, b) => (tsMs(b.until) > tsMs(a.until) ? b : a)).until;
      item.append(el("span", "muted-mark", `muted until ${clock(until)}`));
      // Only a mute of exactly this alert is lifted from here, never a wider one.
      const own = held.filter((m) => m.miner_id === alert.miner_id && m.rule === alert.rule);
      if (own.length === held.length) {
        item.append(button("Unmute", "quiet", () => own.forEach((m) => this.unmute(m.id))));
      }
    } else {
      item.append(button("Mute 1 h", "quiet", () => this.mute(alert)));
    }
    return item;
  }

  firing() {
    return [...this.alerts.values()]
      .filter((alert) => !this.only || alert.miner_id === this.only)
      .sort((a, b) => (a.ts < b.ts ? 1 : -1));
  }

  render() {
    const nowMs = Date.now();
    const firing = this.firing();
    this.list.replaceChildren(...firing.map((alert) => this.item(alert, nowMs)));
    this.section.hidden = firing.length === 0;
    if (this.count) this.count.textContent = String(firing.length);
  }
}
