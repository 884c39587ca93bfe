// fastban's page: fills itself from /api/overview every REFRESH_MS and sends each change as a
// POST with the session's CSRF token. Every text from the guard goes in with textContent,
// never as markup.
"use strict";

const REFRESH_MS = 2000;
const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const SVG = "http://www.w3.org/2000/svg";
const FIELDS = ["maxretry", "findtime", "bantime", "whitelist"];
const STATS = [
  ["packets_seen", "Packets seen"], ["packets_dropped", "Packets dropped"],
  ["packets_passed", "Packets passed"], ["packets_captured", "SIP packets captured"],
  ["responses_parsed", "Responses parsed"], ["failures_counted", "Failures counted"],
  ["failures_proven", "of them proven"], ["logins", "Logins"],
  ["trusted_sources", "Trusted addresses"], ["challenges_open", "Challenges open"],
  ["bans_active", "Bans active"], ["bans_total", "Bans made"], ["unbans_total", "Unbans"],
  ["failures_web_login", "Wrong page passwords"], ["malformed_skipped", "Malformed skipped"],
  ["events_lost", "Events lost"],
];

let clockOffset = 0;        // server time - local time, seconds
let settingsShown = false;  // the form is filled once, then left to the operator

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": CSRF},
    body: JSON.stringify(body),
  });
  if (response.status === 401) { location.href = "/login"; }
  let answer = {};
  try { answer = await response.json(); } catch (e) { answer = {error: response.statusText}; }
  return {ok: response.ok, status: response.status, answer};
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toISOString().replace(/\.\d+Z$/, "Z") : "-";
}

function span(seconds) {
  seconds = Math.max(0, Math.floor(seconds));
  const h = Math.floor(seconds / 3600), m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}h${two(m)}m${two(s)}s` : `${m}m${two(s)}s`;
}

function unblockIcon() {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", "M7 10V7a5 5 0 0 1 9.6-2M5 10h14v11H5z");
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", "currentColor");
  path.setAttribute("stroke-width", "2");
  svg.appendChild(path);
  return svg;
}

function banRow(ban) {
  const row = el("tr");
  row.dataset.target = ban.target;
  row.appendChild(el("td", ban.target, "target"));
  row.appendChild(el("td", when(ban.banned_at)));
  const left = el("td", "", "time-left number");
  if (ban.expires_at) left.dataset.expires = ban.expires_at; else left.textContent = "permanent";
  row.appendChild(left);
  row.appendChild(el("td", ban.packets_dropped, "dropped number"));
  row.appendChild(el("td", ban.failures, "failures number"));
  const reason = el("td", ban.reason, "reason");
  if (ban.failure_class) reason.appendChild(el("span", ban.failure_class, "class " + ban.failure_class));
  row.appendChild(reason);
  row.appendChild(el("td", ban.origin, "origin"));
  const cell = el("td");
  const button = el("button", null, "unblock");
  button.type = "button";
  button.title = "Unblock " + ban.target;
  button.setAttribute("aria-label", button.title);
  button.appendChild(unblockIcon());
  button.addEventListener("click", () => unblock(ban.target));
  cell.appendChild(button);
  row.appendChild(cell);
  return row;
}

async function unblock(target) {
  if (!window.confirm(`Unblock ${target}?`)) return;
  const {ok, answer} = await post("/api/unban", {target});
  document.getElementById("ban-error").textContent = ok ? "" : answer.error;
  refresh();
}

function tickCountdowns() {
  const now = Date.now() / 1000 + clockOffset;
  for (const cell of document.querySelectorAll("td.time-left[data-expires]")) {
    cell.textContent = span(Number(cell.dataset.expires) - now);
  }
}

function showBans(bans, shown, active) {
  const body = document.querySelector("#bans tbody");
  body.replaceChildren(...bans.map(banRow));
  document.getElementById("no-bans").hidden = bans.length > 0;
  document.getElementById("ban-count").textContent =
    active > bans.length ? `(${active}; the newest ${shown} shown)` : `(${active})`;
  tickCountdowns();
}

function showStats(stats) {
  const body = document.querySelector("#stats tbody");
  body.replaceChildren(...STATS.map(([key, label]) => {
    const row = el("tr");
    row.appendChild(el("td", label));
    row.appendChild(el("td", stats[key] ?? 0, "number"));
    row.dataset.stat = key;
    return row;
  }));
  document.getElementById("guard").textContent =
    `guarding ${stats.iface} (XDP ${stats.xdp_mode}, parser ${stats.parser})`;
}

// The last hour: one line per series, each on its own scale, of the change per sample.
function showChart(history) {
  const width = 720, height = 180, series = [
    [1, "failures", "#c53030"], [2, "bans", "#2b6cb0"], [3, "dropped packets", "#2f855a"]];
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  const lane = height / series.length;
  series.forEach(([column, label, color], i) => {
    const deltas = history.slice(1).map((s, k) => Math.max(0, s[column] - history[k][column]));
    const top = i * lane + 16, bottom = (i + 1) * lane - 4, peak = Math.max(1, ...deltas);
    const text = document.createElementNS(SVG, "text");
    text.setAttribute("x", 0);
    text.setAttribute("y", i * lane + 12);
    const total = deltas.reduce((a, b) => a + b, 0);
    text.textContent = `${label}: ${total} (peak ${Math.max(0, ...deltas)})`;
    svg.appendChild(text);
    const line = document.createElementNS(SVG, "polyline");
    const step = deltas.length > 1 ? width / (deltas.length - 1) : 0;
    line.setAttribute("points", deltas.map((d, k) =>
      `${(k * step).toFixed(1)},${(bottom - (bottom - top) * d / peak).toFixed(1)}`).join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", color);
    line.setAttribute("stroke-width", "1.5");
    line.dataset.series = label;
    svg.appendChild(line);
  });
  const caption = el("p", history.length > 1
    ? `Per ${Math.round(history[1][0] - history[0][0])} s over the last ` +
      `${Math.round((history[history.length - 1][0] - history[0][0]) / 60)} min`
    : "The chart fills in as the guard runs (a sample every 10 s).", "note");
  document.getElementById("chart").replaceChildren(svg, caption);
}

function showSettings(values, error, overridden) {
  document.getElementById("_form-error").textContent = error || "";
  if (settingsShown || !values || !Object.keys(values).length) return;
  for (const name of FIELDS) document.getElementById(name).value = values[name] ?? "";
  for (const name of overridden || []) {
    if (FIELDS.includes(name)) {
      document.getElementById(`${name}-error`).textContent =
        "set on the guard's command line: the file's value does not apply";
    }
  }
  settingsShown = true;
}

async function refresh() {
  let data;
  try {
    const response = await fetch("/api/overview", {credentials: "same-origin"});
    if (response.status === 401) { location.href = "/login"; return; }
    data = await response.json();
    if (!response.ok) throw new Error(data.error || response.statusText);
  } catch (error) {
    document.getElementById("guard-error").textContent = `The guard does not answer: ${error.message}`;
    return;
  }
  document.getElementById("guard-error").textContent = "";
  clockOffset = data.now - Date.now() / 1000;
  showBans(data.bans, data.bans_shown, data.stats.bans_active);
  showStats(data.stats);
  showChart(data.history);
  showSettings(data.settings, data.settings_error, data.overridden);
}

document.getElementById("settings-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = {};
  for (const name of FIELDS) body[name] = document.getElementById(name).value;
  for (const name of [...FIELDS, "_form"]) document.getElementById(`${name}-error`).textContent = "";
  document.getElementById("settings-saved").textContent = "";
  const {ok, answer} = await post("/api/settings", body);
  if (ok) {
    document.getElementById("settings-saved").textContent = answer.saved ? "Saved and applied." : "Nothing changed.";
    return;
  }
  const errors = answer.errors || {_form: answer.error};
  for (const [name, message] of Object.entries(errors)) {
    const target = document.getElementById(`${name}-error`) || document.getElementById("_form-error");
    target.textContent = message;
  }
});

document.getElementById("ban-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const {ok, answer} = await post("/api/ban", {
    target: document.getElementById("ban-target").value,
    duration: document.getElementById("ban-duration").value,
    reason: document.getElementById("ban-reason").value,
  });
  document.getElementById("ban-error").textContent = ok ? "" : answer.error;
  if (ok) event.target.reset();
  refresh();
});

refresh();
setInterval(refresh, REFRESH_MS);
setInterval(tickCountdowns, 1000);
