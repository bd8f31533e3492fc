// Shoal dashboard: polls GET /api/stats, draws the overview charts on <canvas>, and
// drives the clients, subscriptions, retained and "try it" panels. No framework, no
// build step: this file is embedded in the broker binary as is.
"use strict";

const POLL_MS = 1500;
const HISTORY = 120; // points kept per chart (3 minutes at POLL_MS)
const TOKEN_KEY = "shoal-admin-token";

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- API access

let token = sessionStorage.getItem(TOKEN_KEY) || "";

function takeTokenFromFragment() {
  // `#token=...` lets an operator open the dashboard from a link; the fragment never
  // reaches the server, and it is removed from the address bar at once.
  const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (m) {
    token = decodeURIComponent(m[1]);
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const init = { method, headers: { Authorization: `Bearer ${token}` }, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) {
    showLogin("The token was refused.");
    throw new ApiError(401, "unauthorized");
  }
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) throw new ApiError(res.status, (data && data.error) || res.statusText);
  return data;
}

function showLogin(message) {
  $("login").hidden = false;
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
  $("token").focus();
  setLive(false);
}

function toast(msg, bad) {
  const t = $("toast");
  t.textContent = msg;
  t.className = bad ? "toast bad" : "toast";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 3500);
}

function setLive(ok) {
  const d = $("live");
  d.className = ok ? "dot ok" : "dot bad";
  d.title = ok ? "Live" : "Not receiving stats";
}

// ---------------------------------------------------------------- formatting

function fmt(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(a >= 1e10 ? 0 : 1) + "G";
  if (a >= 1e6) return (n / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
  if (a >= 1e4) return (n / 1e3).toFixed(a >= 1e5 ? 0 : 1) + "k";
  if (Number.isInteger(n)) return String(n);
  return n.toFixed(a < 10 ? 1 : 0);
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(Math.round(n)) : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
}

function fmtUptime(s) {
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d > 0) return `up ${d}d ${h}h`;
  if (h > 0) return `up ${h}h ${m}m`;
  return `up ${m}m ${s % 60}s`;
}

function fmtSince(unix) {
  if (!unix) return "–";
  const secs = Math.max(0, Math.floor(Date.now() / 1000 - unix));
  if (secs < 60) return `${secs}s ago`;
  if (secs < 3600) return `${Math.floor(secs / 60)}m ago`;
  if (secs < 86400) return `${Math.floor(secs / 3600)}h ago`;
  return new Date(unix * 1000).toISOString().slice(0, 10);
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}

// ---------------------------------------------------------------- charts

class Chart {
  constructor(canvas, series) {
    this.canvas = canvas;
    this.series = series.map((s) => ({ ...s, data: [] }));
  }

  push(values) {
    this.series.forEach((s, i) => {
      s.data.push(values[i]);
      if (s.data.length > HISTORY) s.data.shift();
    });
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const left = 44, right = 8, top = 22, bottom = 16;
    const pw = w - left - right, ph = h - top - bottom;

    let max = 0;
    for (const s of this.series) for (const v of s.data) if (v > max) max = v;
    const scale = niceScale(max);
    max = scale.max;
    const lines = Math.round(max / scale.step);

    g.font = "11px system-ui, sans-serif";
    g.textBaseline = "middle";
    g.textAlign = "right";
    for (let i = 0; i <= lines; i++) {
      const y = top + ph - (ph * i) / lines;
      g.strokeStyle = i === 0 ? "#cdd3de" : "#eef1f6";
      g.lineWidth = 1;
      g.beginPath();
      g.moveTo(left, Math.round(y) + 0.5);
      g.lineTo(left + pw, Math.round(y) + 0.5);
      g.stroke();
      g.fillStyle = "#8a93a6";
      g.fillText(fmt(scale.step * i), left - 6, y);
    }
    g.textAlign = "left";
    g.fillText(`last ${Math.round((HISTORY * POLL_MS) / 60000)} min`, left, h - 6);

    // Legend with the latest value of each series.
    let lx = left;
    g.textBaseline = "middle";
    for (const s of this.series) {
      const last = s.data.length ? s.data[s.data.length - 1] : null;
      const label = `${s.name} ${fmt(last)}`;
      g.fillStyle = s.color;
      g.fillRect(lx, 7, 10, 3);
      g.fillStyle = "#1d2433";
      g.fillText(label, lx + 14, 9);
      lx += g.measureText(label).width + 30;
    }

    for (const s of this.series) {
      if (s.data.length < 2) continue;
      const step = pw / (HISTORY - 1);
      const x0 = left + pw - step * (s.data.length - 1);
      const y = (v) => top + ph - (max ? (v / max) * ph : 0);
      g.beginPath();
      s.data.forEach((v, i) => (i ? g.lineTo(x0 + i * step, y(v)) : g.moveTo(x0, y(v))));
      g.strokeStyle = s.color;
      g.lineWidth = 2;
      g.lineJoin = "round";
      g.stroke();
      if (s.fill) {
        g.lineTo(x0 + (s.data.length - 1) * step, top + ph);
        g.lineTo(x0, top + ph);
        g.closePath();
        g.fillStyle = s.fill;
        g.fill();
      }
    }
  }
}

// Axis scale: a step of 1, 2 or 5 × 10^k giving at most five gridlines above zero.
function niceScale(v) {
  if (v <= 0) return { max: 4, step: 1 };
  const raw = v / 5;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  let step = 10 * p;
  for (const m of [1, 2, 5]) if (raw <= m * p) { step = m * p; break; }
  return { max: step * Math.max(1, Math.ceil(v / step)), step };
}

const charts = {};

function setupCharts() {
  charts.conn = new Chart($("c-conn"), [{ name: "connections", color: "#1f7a8c", fill: "rgba(31,122,140,.10)" }]);
  charts.msgs = new Chart($("c-msgs"), [
    { name: "in", color: "#1f7a8c" },
    { name: "out", color: "#e07a2f" },
  ]);
  charts.drop = new Chart($("c-drop"), [{ name: "dropped", color: "#c0392b", fill: "rgba(192,57,43,.08)" }]);
  charts.queue = new Chart($("c-queue"), [
    { name: "queued", color: "#6c5ce7" },
    { name: "in flight", color: "#2e9d5b" },
  ]);
  window.addEventListener("resize", () => Object.values(charts).forEach((c) => c.draw()));
}

// ---------------------------------------------------------------- overview

let prev = null; // { at: ms, snap }

const sum = (a) => (a || []).reduce((x, y) => x + y, 0);
const connections = (g) => sum((g.connections || []).map(sum));
const dropped = (c) => c.dropped_queue_full + c.dropped_expired + c.dropped_too_large + c.dropped_acl +
  (c.dropped_store_unavailable || 0);

async function pollStats() {
  let snap;
  try {
    snap = await api("GET", "/api/stats");
  } catch (e) {
    if (e.status !== 401) setLive(false);
    return;
  }
  setLive(true);
  const now = performance.now();
  const c = snap.counters, g = snap.gauges;
  let rIn = null, rOut = null, rDrop = null, rBin = null, rBout = null;
  if (prev) {
    const dt = Math.max(0.001, (now - prev.at) / 1000);
    const pc = prev.snap.counters;
    const rate = (a, b) => Math.max(0, a - b) / dt;
    rIn = rate(sum(c.publish_received), sum(pc.publish_received));
    rOut = rate(sum(c.publish_sent), sum(pc.publish_sent));
    rDrop = rate(dropped(c), dropped(pc));
    rBin = rate(c.bytes_received, pc.bytes_received);
    rBout = rate(c.bytes_sent, pc.bytes_sent);
    charts.msgs.push([rIn, rOut]);
    charts.drop.push([rDrop]);
  }
  prev = { at: now, snap };
  const conns = connections(g);
  charts.conn.push([conns]);
  charts.queue.push([g.queued, g.inflight]);

  $("version").textContent = `v${snap.version}`;
  $("uptime").textContent = fmtUptime(snap.uptime_secs);
  $("s-conn").textContent = fmt(conns);
  $("s-sess").textContent = `${fmt(g.sessions_online + g.sessions_offline)} (${fmt(g.sessions_offline)})`;
  $("s-in").textContent = fmt(rIn);
  $("s-out").textContent = fmt(rOut);
  $("s-drop").textContent = fmt(rDrop);
  $("s-queued").textContent = fmt(g.queued);
  $("s-inflight").textContent = fmt(g.inflight);
  $("s-subs").textContent = fmt(g.subscriptions);
  $("s-retained").textContent = fmt(snap.retained);
  $("s-bytes").textContent = rBin === null ? "–" : `${fmtBytes(rBin)} / ${fmtBytes(rBout)}`;
  const causes = $("causes");
  causes.replaceChildren(
    ...[["queue full", c.dropped_queue_full], ["expired", c.dropped_expired],
        ["too large", c.dropped_too_large], ["ACL", c.dropped_acl],
        ["store unavailable", c.dropped_store_unavailable || 0]]
      .map(([n, v]) => el("div", {}, el("span", { class: "muted" }, n), el("b", {}, fmt(v)))),
  );
  if (activeTab === "overview") Object.values(charts).forEach((ch) => ch.draw());
}

// ---------------------------------------------------------------- tabs

let activeTab = "overview";

function showTab(name) {
  if (!document.getElementById(`tab-${name}`)) name = "overview";
  activeTab = name;
  history.replaceState(null, "", name === "overview" ? location.pathname : `#tab=${name}`);
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.tab === name));
  document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("active", p.id === `tab-${name}`));
  if (name === "overview") Object.values(charts).forEach((c) => c.draw());
  if (name === "clients") loadClients();
  if (name === "subscriptions") loadSubs();
  if (name === "retained") loadRetained();
}

function debounce(fn, ms) {
  let t;
  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
}

// A destructive button asks again in place (no native dialog, which would also block
// a headless browser driving the page): first click arms it for 3 s, second acts.
function confirmButton(label, action) {
  const b = el("button", { class: "danger small" }, label);
  b.addEventListener("click", (ev) => {
    ev.stopPropagation();
    if (b.dataset.armed) {
      delete b.dataset.armed;
      b.disabled = true;
      action();
      return;
    }
    b.dataset.armed = "1";
    b.textContent = "Confirm?";
    b.classList.add("armed");
    setTimeout(() => {
      delete b.dataset.armed;
      b.textContent = label;
      b.classList.remove("armed");
    }, 3000);
  });
  return b;
}

function emptyRow(cols, text) {
  return el("tr", {}, el("td", { class: "empty", colspan: String(cols) }, text));
}

// ---------------------------------------------------------------- clients

const PAGE = 50;
let clientOffset = 0;
let selectedClient = null;

async function loadClients() {
  const q = new URLSearchParams({ search: $("client-search").value, limit: PAGE, offset: clientOffset });
  let page;
  try {
    page = await api("GET", `/api/clients?${q}`);
  } catch (e) {
    if (e.status !== 401) toast(`Clients: ${e.message}`, true);
    return;
  }
  const body = $("clients");
  if (!page.clients.length) {
    body.replaceChildren(emptyRow(9, $("client-search").value ? "No client matches." : "No clients."));
  } else {
    body.replaceChildren(...page.clients.map(clientRow));
  }
  const end = Math.min(page.total, clientOffset + page.clients.length);
  $("client-count").textContent = page.total ? `${clientOffset + 1}–${end} of ${page.total}` : "";
  $("client-prev").disabled = clientOffset === 0;
  $("client-next").disabled = end >= page.total;
}

function clientRow(c) {
  const state = c.connected
    ? el("span", { class: "badge on" }, fmtSince(c.connected_since))
    : el("span", { class: "badge off" }, "offline");
  const tr = el(
    "tr",
    { class: "clickable" + (c.id === selectedClient ? " selected" : ""), "data-client": c.id, onclick: () => showClient(c.id) },
    el("td", { class: "mono" }, c.id),
    el("td", {}, c.username || "–"),
    el("td", { class: "mono" }, c.address || "–"),
    el("td", {}, c.protocol),
    el("td", {}, state),
    el("td", { class: "num" }, fmt(c.inflight)),
    el("td", { class: "num" }, fmt(c.queued)),
    el("td", { class: "num" }, `${fmtBytes(c.bytes_in)} / ${fmtBytes(c.bytes_out)}`),
    el("td", { class: "actions" }, c.connected
      ? confirmButton("Disconnect", () => disconnectClient(c.id))
      : ""),
  );
  return tr;
}

async function disconnectClient(id) {
  try {
    await api("DELETE", `/api/clients/${encodeURIComponent(id)}`);
    toast(`Disconnected ${id}`);
  } catch (e) {
    toast(`Disconnect failed: ${e.message}`, true);
  }
  loadClients();
}

async function showClient(id) {
  selectedClient = id;
  history.replaceState(null, "", `#tab=clients&client=${encodeURIComponent(id)}`);
  const box = $("client-detail");
  let d;
  try {
    d = await api("GET", `/api/clients/${encodeURIComponent(id)}`);
  } catch (e) {
    toast(`${id}: ${e.message}`, true);
    return;
  }
  const dl = el("dl", {});
  const add = (k, v) => dl.append(el("dt", {}, k), el("dd", {}, v));
  add("Status", d.connected ? "connected" : "offline");
  add("User", d.username || "–");
  add("Address", d.address || "–");
  add("Listener", d.listener || "–");
  add("Protocol", d.protocol);
  add("Keep-alive", `${d.keep_alive_secs} s`);
  add("Clean start", d.clean_start ? "yes" : "no");
  add("Session expiry", d.session_expiry_secs === null ? "never" : `${d.session_expiry_secs} s`);
  add("In flight / queued", `${d.inflight} / ${d.queued} (${fmtBytes(d.queued_bytes || 0)})`);
  const subs = d.subscriptions.length
    ? el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Filter"), el("th", { class: "num" }, "QoS"))),
        el("tbody", {}, ...d.subscriptions.map((s) =>
          el("tr", {}, el("td", { class: "mono" }, s.filter), el("td", { class: "num" }, String(s.qos))))))
    : el("p", { class: "muted" }, "No subscriptions.");
  box.replaceChildren(
    el("h3", {}, d.id, el("span", { class: "spacer" }),
      el("button", { class: "ghost small", onclick: () => { selectedClient = null; history.replaceState(null, "", "#tab=clients"); box.hidden = true; box.parentElement.classList.remove("with-detail"); } }, "Close")),
    dl, el("h3", {}, "Subscriptions"), subs);
  box.hidden = false;
  box.parentElement.classList.add("with-detail");
  document.querySelectorAll("#clients tr").forEach((tr) =>
    tr.classList.toggle("selected", tr.firstChild && tr.firstChild.textContent === id));
}

// ---------------------------------------------------------------- subscriptions

async function loadSubs() {
  const q = new URLSearchParams({ filter: $("sub-filter").value, limit: 500 });
  let rows;
  try {
    rows = await api("GET", `/api/subscriptions?${q}`);
  } catch (e) {
    if (e.status !== 401) toast(`Subscriptions: ${e.message}`, true);
    return;
  }
  $("sub-count").textContent = `${rows.length}${rows.length === 500 ? "+" : ""} shown`;
  $("subs").replaceChildren(...(rows.length
    ? rows.map((s) => el("tr", {}, el("td", { class: "mono" }, s.filter), el("td", { class: "mono" }, s.client_id),
        el("td", { class: "num" }, String(s.qos))))
    : [emptyRow(3, "No subscriptions.")]));
}

// ---------------------------------------------------------------- retained

async function loadRetained() {
  const q = new URLSearchParams({ filter: $("ret-filter").value || "#", limit: 500 });
  let rows;
  try {
    rows = await api("GET", `/api/retained?${q}`);
  } catch (e) {
    if (e.status === 400) $("ret-count").textContent = e.message;
    else if (e.status !== 401) toast(`Retained: ${e.message}`, true);
    return;
  }
  $("ret-count").textContent = `${rows.length}${rows.length === 500 ? "+" : ""} shown`;
  $("retained").replaceChildren(...(rows.length
    ? rows.map((r) => el("tr", {},
        el("td", { class: "mono" }, r.topic),
        el("td", { class: "num" }, String(r.qos)),
        el("td", { class: "num" }, fmtBytes(r.size)),
        el("td", { class: "mono payload", title: r.payload ?? "" }, r.binary ? el("span", { class: "badge" }, "binary") : r.payload),
        el("td", { class: "actions" }, confirmButton("Delete", () => deleteRetained(r.topic)))))
    : [emptyRow(5, "No retained messages match.")]));
}

async function deleteRetained(topic) {
  try {
    await api("DELETE", `/api/retained/${topic.split("/").map(encodeURIComponent).join("/")}`);
    toast(`Deleted ${topic}`);
  } catch (e) {
    toast(`Delete failed: ${e.message}`, true);
  }
  loadRetained();
}

// ---------------------------------------------------------------- try it

const mqtt = new window.ShoalMqtt.MqttWsClient();

function logLine(cls, topic, text) {
  const log = $("log");
  const t = new Date().toTimeString().slice(0, 8);
  log.prepend(el("li", {}, el("span", { class: "t" }, t), el("span", { class: cls }, topic), el("span", {}, text)));
  while (log.children.length > 200) log.lastChild.remove();
}

function setupTry(info) {
  $("ws-client").value = `shoal-dashboard-${Math.random().toString(36).slice(2, 8)}`;
  if (info && info.ws_url) {
    $("ws-url").value = info.ws_url;
  } else {
    const note = $("ws-note");
    note.hidden = false;
    note.textContent =
      "No WebSocket listener is configured on this broker, so the page cannot reach it over MQTT. " +
      "Add a listener with transport \"ws\" to the config, or enter the URL of one below.";
  }
  mqtt.on("state", (s, detail) => {
    const b = $("ws-state");
    b.textContent = detail ? `${s}: ${detail}` : s;
    b.className = "badge " + (s === "connected" ? "on" : s === "error" ? "bad" : "off");
    const up = s === "connected";
    $("sub-go").disabled = !up;
    $("pub-go").disabled = !up;
    $("ws-connect").textContent = up || s === "connecting" ? "Disconnect" : "Connect";
    if (!up) $("sub-list").replaceChildren();
  });
  mqtt.on("message", (m) => logLine(m.topic.startsWith("$SYS") ? "sys" : "topic", m.topic,
    (m.retain ? "[retained] " : "") + m.text));
  mqtt.on("error", (msg) => toast(msg, true));
  $("ws-connect").addEventListener("click", () => {
    if (mqtt.state === "connected" || mqtt.state === "connecting") { mqtt.close(); return; }
    const url = $("ws-url").value.trim();
    if (!/^wss?:\/\//.test(url)) { toast("Enter a ws:// or wss:// URL", true); return; }
    mqtt.connect(url, $("ws-client").value.trim() || "shoal-dashboard");
  });
  $("sub-go").addEventListener("click", () => {
    const f = $("sub-topic").value.trim();
    if (!f) return;
    mqtt.subscribe(f, Number($("sub-qos").value));
    const chip = el("li", {}, f, el("button", { title: "Unsubscribe", onclick: () => { mqtt.unsubscribe(f); chip.remove(); } }, "×"));
    $("sub-list").append(chip);
  });
  $("pub-go").addEventListener("click", () => {
    const topic = $("pub-topic").value.trim();
    if (!topic) return;
    mqtt.publish(topic, $("pub-payload").value, Number($("pub-qos").value), $("pub-retain").checked);
    logLine("t", "→ " + topic, $("pub-payload").value);
  });
  $("log-clear").addEventListener("click", () => $("log").replaceChildren());
}

// ---------------------------------------------------------------- start

let started = false;

async function start() {
  let info;
  try {
    info = await api("GET", "/api/info");
  } catch (e) {
    if (e.status !== 401) showLogin(`Cannot reach the admin API: ${e.message}`);
    return;
  }
  $("login").hidden = true;
  $("logout").hidden = false;
  if (started) return;
  started = true;
  setupTry(info);
  pollStats();
  setInterval(pollStats, POLL_MS);
  setInterval(() => { if (activeTab === "clients") loadClients(); }, 5000);
}

document.addEventListener("DOMContentLoaded", () => {
  const tab = location.hash.match(/(?:^#|&)tab=(\w+)/);
  const linked = location.hash.match(/(?:^#|&)client=([^&]+)/);
  takeTokenFromFragment();
  setupCharts();
  document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => showTab(t.dataset.tab)));
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    start();
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    token = "";
    location.reload();
  });
  $("client-search").addEventListener("input", debounce(() => { clientOffset = 0; loadClients(); }, 250));
  $("client-prev").addEventListener("click", () => { clientOffset = Math.max(0, clientOffset - PAGE); loadClients(); });
  $("client-next").addEventListener("click", () => { clientOffset += PAGE; loadClients(); });
  $("sub-filter").addEventListener("input", debounce(loadSubs, 250));
  $("ret-filter").addEventListener("input", debounce(loadRetained, 300));
  if (tab) showTab(tab[1]);
  // `#tab=clients&client=<id>` links straight to one client's details.
  if (linked && token) showClient(decodeURIComponent(linked[1]));
  if (token) start(); else showLogin();
});
