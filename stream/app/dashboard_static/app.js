// labquake dashboard: draws what /events sends (see stream/app/dashboard.py for the events).
// A point is [window_end_sample, window_end_time, ttf_s, tsf_s, p_failure, model_version,
// warming_up].
"use strict";

const SAMPLE = 0, TIME = 1, TTF = 2, TSF = 3, P = 4, VERSION = 5, WARMING = 6;
// Kinds that open or continue an episode; withdrawn and cleared end it.
const OPEN_KINDS = ["raised", "updated"];
const MAX_POINTS = 20000;          // per stream kept in the page
const MAX_ALERTS = 500;            // in the timeline
const STALE_HEARTBEAT_S = 15;      // a monitor's heartbeat expires after this long
const DRAW_INTERVAL_MS = 200;
const DEFAULT_THRESHOLD = 0.5;
const minutes = Number(new URLSearchParams(location.search).get("minutes")) || 5;
const SPAN_S = minutes * 60;       // instrument-clock seconds shown

const state = {
  streams: new Map(),  // "instrument/channel" -> {points, alerts, card, dirty}
  alerts: [],
  monitors: [],
  failureTsf: 1.0,
  draws: 0,
  connected: false,
};

function streamOf(id, instrument, channel) {
  let stream = state.streams.get(id);
  if (!stream) {
    const card = document.getElementById("stream-card").content.firstElementChild.cloneNode(true);
    card.dataset.stream = id;
    card.querySelector(".name").textContent = `${instrument} · ${channel}`;
    const list = document.getElementById("streams");
    const after = [...list.querySelectorAll(".stream")].find((c) => c.dataset.stream > id);
    list.insertBefore(card, after || null);
    document.getElementById("no-streams").hidden = true;
    stream = { points: [], alerts: [], card, dirty: true };
    state.streams.set(id, stream);
  }
  return stream;
}

function addPoints(message, replace) {
  const stream = streamOf(message.stream, message.instrument, message.channel);
  if (replace) stream.points = [];
  const last = stream.points.length ? stream.points[stream.points.length - 1][SAMPLE] : -1;
  for (const point of message.points) {
    if (point[SAMPLE] > last || replace) stream.points.push(point);
  }
  if (stream.points.length > MAX_POINTS) stream.points.splice(0, stream.points.length - MAX_POINTS);
  stream.dirty = true;
}

function addAlert(alert) {
  const id = `${alert.instrument}/${alert.channel}`;
  if (state.alerts.some((a) => a.alert_id === alert.alert_id)) return;
  state.alerts.push(alert);
  if (state.alerts.length > MAX_ALERTS) state.alerts.shift();
  const stream = streamOf(id, alert.instrument, alert.channel);
  stream.alerts.push(alert);
  stream.alerts.sort((a, b) => a.window_end_sample - b.window_end_sample);
  stream.dirty = true;
  const item = document.createElement("li");
  const when = new Date(alert.emitted_at * 1000).toLocaleTimeString();
  const kind = document.createElement("span");
  kind.className = alert.kind;
  kind.textContent = alert.kind.toUpperCase();
  item.append(kind, ` ${when} ${id} at ${alert.window_end_time.toFixed(3)} s — ` +
    `P=${alert.p_failure.toFixed(2)} TTF=${alert.ttf_s.toFixed(2)} s${countdownText(alert)} ` +
    `(${alert.reason}${alert.warming_up ? ", warming up" : ""}; episode ` +
    `${alert.episode_id ?? "-"}; model ${alert.model_version})`);
  document.getElementById("alerts").prepend(item);
}

function countdownText(alert) {
  // The predicted failure time on the instrument clock and its interval, when it has them.
  if (typeof alert.failure_time !== "number") return "";
  const interval = typeof alert.failure_time_lower === "number"
    ? ` (${alert.failure_time_lower.toFixed(2)}–${alert.failure_time_upper.toFixed(2)}, ` +
      `${Math.round(alert.interval_coverage * 100)} %)` : "";
  return `, failure at ${alert.failure_time.toFixed(2)} s${interval}`;
}

function showHealth(health) {
  state.monitors = health.monitors;
  const body = document.querySelector("#health tbody");
  body.replaceChildren();
  if (!health.monitors.length) {
    body.innerHTML = '<tr class="empty"><td colspan="9">no monitor heartbeat</td></tr>';
    return;
  }
  for (const beat of health.monitors) {
    // A lag of null: the broker did not answer the last lag query.
    const lag = beat.lag === null ? "unknown"
      : Object.values(beat.lag || {}).reduce((sum, n) => sum + n, 0);
    const row = document.createElement("tr");
    // A version is <created UTC>-<hash>: the hash tells versions apart in a narrow column.
    const version = String(beat.model_version || "").split("-").pop();
    for (const value of [beat.member, version, lag, beat.windows, beat.alerts_raised,
      beat.dead_letters, beat.gaps, beat.runs, `${beat.age_s} s ago`]) {
      const cell = document.createElement("td");
      cell.textContent = value === undefined ? "" : value;
      row.append(cell);
    }
    row.children[1].title = beat.model_version;
    if (beat.age_s > STALE_HEARTBEAT_S) row.lastChild.className = "stale";
    body.append(row);
  }
}

// -- drawing ------------------------------------------------------------------------------

const LEFT = 58, RIGHT = 14, TTF_TOP = 12, TTF_BOTTOM = 150, P_TOP = 172, P_BOTTOM = 262;

function failures(points) {
  // The model's time since failure resets at a failure: it happened tsf_s before.
  const found = [];
  for (let i = 1; i < points.length; i++) {
    if (points[i][TSF] < state.failureTsf && points[i - 1][TSF] >= state.failureTsf) {
      found.push(points[i][TIME] - points[i][TSF]);
    }
  }
  return found;
}

function alertSpans(alerts, end) {
  const spans = [];
  let open = null;
  for (const alert of alerts) {
    if (alert.kind === "raised") open = alert.window_end_time;
    else if (!OPEN_KINDS.includes(alert.kind) && open !== null) {
      spans.push([open, alert.window_end_time]);
      open = null;
    }
  }
  if (open !== null) spans.push([open, end]);
  return spans;
}

function draw(stream) {
  const canvas = stream.card.querySelector("canvas");
  const ctx = canvas.getContext("2d");
  const width = canvas.width, height = canvas.height;
  ctx.clearRect(0, 0, width, height);
  const points = stream.points;
  if (!points.length) return;
  const last = points[points.length - 1];
  // The last SPAN_S seconds, or all there is while there is less.
  const end = last[TIME];
  const start = Math.min(Math.max(end - SPAN_S, points[0][TIME]), end - 1);
  const span = end - start;
  const first = points.findIndex((p) => p[TIME] >= start);
  const shown = points.slice(first < 0 ? 0 : first);
  const x = (t) => LEFT + ((t - start) / span) * (width - LEFT - RIGHT);
  const ttfMax = Math.max(1, ...shown.map((p) => p[TTF])) * 1.1;
  const yTtf = (v) => TTF_BOTTOM - (v / ttfMax) * (TTF_BOTTOM - TTF_TOP);
  const yP = (v) => P_BOTTOM - v * (P_BOTTOM - P_TOP);
  const style = getComputedStyle(document.documentElement);

  ctx.fillStyle = style.getPropertyValue("--alert");
  for (const [from, to] of alertSpans(stream.alerts, end)) {
    if (to < start) continue;
    ctx.fillRect(x(Math.max(from, start)), TTF_TOP, x(to) - x(Math.max(from, start)) + 1,
      P_BOTTOM - TTF_TOP);
  }
  ctx.strokeStyle = style.getPropertyValue("--line");
  ctx.fillStyle = style.getPropertyValue("--muted");
  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  for (const [top, bottom, label] of [[TTF_TOP, TTF_BOTTOM, "TTF (s)"], [P_TOP, P_BOTTOM, "P(failure)"]]) {
    ctx.strokeRect(LEFT, top, width - LEFT - RIGHT, bottom - top);
    ctx.fillText(label, 4, top + 10);
  }
  ctx.fillText(ttfMax.toFixed(1), 4, TTF_TOP + 24);
  ctx.fillText("0", 4, TTF_BOTTOM);
  ctx.fillText("1", 4, P_TOP + 24);
  ctx.fillText("0", 4, P_BOTTOM);
  for (let i = 0; i <= 4; i++) {
    const t = start + (span * i) / 4;
    ctx.fillText(`${t.toFixed(1)} s`, Math.min(x(t), width - 60), height - 8);
  }
  const threshold = stream.alerts.length ? stream.alerts[stream.alerts.length - 1].threshold
    : DEFAULT_THRESHOLD;
  ctx.setLineDash([4, 4]);
  ctx.beginPath();
  ctx.moveTo(LEFT, yP(threshold));
  ctx.lineTo(width - RIGHT, yP(threshold));
  ctx.stroke();
  ctx.strokeStyle = style.getPropertyValue("--failure");
  for (const t of failures(shown)) {
    if (t < start) continue;
    ctx.beginPath();
    ctx.moveTo(x(t), TTF_TOP);
    ctx.lineTo(x(t), P_BOTTOM);
    ctx.stroke();
  }
  ctx.setLineDash([]);
  for (const [index, color, y] of [[TTF, "--ttf", yTtf], [P, "--p", yP]]) {
    ctx.strokeStyle = style.getPropertyValue(color);
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    shown.forEach((p, i) => (i ? ctx.lineTo(x(p[TIME]), y(p[index])) : ctx.moveTo(x(p[TIME]), y(p[index]))));
    ctx.stroke();
  }

  const card = stream.card;
  card.querySelector(".ttf").textContent = `${last[TTF].toFixed(2)} s`;
  card.querySelector(".p").textContent = last[P].toFixed(3);
  card.querySelector(".clock").textContent = `${end.toFixed(2)} s`;
  card.querySelector(".version").textContent = last[VERSION];
  const latest = stream.alerts[stream.alerts.length - 1];
  const raised = latest !== undefined && OPEN_KINDS.includes(latest.kind);
  const warming = Boolean(last[WARMING]);
  const badge = card.querySelector(".badge");
  badge.textContent = raised ? "ALERT" : warming ? "warming up" : "quiet";
  badge.title = warming ? "the stream's context is still filling: no alert is raised yet" : "";
  badge.classList.toggle("raised", raised);
  badge.classList.toggle("warming", warming && !raised);
  card.querySelector(".countdown").textContent = raised && typeof latest.failure_time === "number"
    ? `${Math.max(0, latest.failure_time - end).toFixed(2)} s${countdownText(latest)}` : "–";
  card.dataset.xEnd = end;
  state.draws += 1;
}

setInterval(() => {
  for (const stream of state.streams.values()) {
    if (stream.dirty) { stream.dirty = false; draw(stream); }
  }
}, DRAW_INTERVAL_MS);

// -- the feed -----------------------------------------------------------------------------

function connect() {
  const connection = document.getElementById("connection");
  const events = new EventSource("/events");
  const on = (name, handle) => events.addEventListener(name, (e) => handle(JSON.parse(e.data)));
  events.onopen = () => {
    state.connected = true;
    connection.dataset.state = "live";
    connection.textContent = "live";
  };
  events.onerror = () => {
    state.connected = false;
    connection.dataset.state = "lost";
    connection.textContent = "reconnecting…";
  };
  on("config", (config) => { state.failureTsf = config.failure_tsf_s; });
  on("history", (message) => addPoints(message, true));
  on("prediction", (message) => addPoints(message, false));
  on("alert", addAlert);
  on("health", showHealth);
  on("problem", (problem) => { connection.textContent = `Redis: ${problem.redis}`; });
}

// What a script or a test reads of the page.
window.labquake = {
  snapshot() {
    const streams = {};
    for (const [id, stream] of state.streams) {
      const last = stream.points[stream.points.length - 1];
      streams[id] = { points: stream.points.length, alerts: stream.alerts.length,
        warmingUp: last ? Boolean(last[WARMING]) : null,
        badge: stream.card.querySelector(".badge").textContent,
        lastSample: last ? last[SAMPLE] : null, lastTime: last ? last[TIME] : null,
        xEnd: Number(stream.card.dataset.xEnd || NaN) };
    }
    return { streams, alerts: state.alerts.length, monitors: state.monitors.length,
      draws: state.draws, connected: state.connected };
  },
};

connect();
