// facescreen review dashboard: plain JS, nothing loaded from elsewhere.
// Data is only ever put on the page as text (textContent), never as HTML: subject ids,
// comments and camera names come from people and cameras, not from us.
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "facescreen.token";
const RANK = { viewer: 0, reviewer: 1, admin: 2 };
const state = { me: null, alerts: new Map(), cards: new Map(), crops: new Map(),
                cursor: null, source: null, cameraTimer: null, filters: { watchlist: "", camera: "", review: "" } };
const $ = (id) => document.getElementById(id);

class HttpError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${token()}` }, options.headers || {});
  const response = await fetch(API + path, Object.assign({}, options, { headers }));
  if (response.status === 401) { signOut("Your token was refused (expired or revoked?)."); }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new HttpError(response.status, typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return response;
}

async function getJson(path) { return (await api(path)).json(); }

function canReview() { return state.me !== null && (RANK[state.me.role] ?? -1) >= RANK.reviewer; }

// ---- sign in / out ------------------------------------------------------------------
function showLogin(message) {
  $("board").hidden = true; $("logout").hidden = true; $("login").hidden = false;
  $("who").textContent = ""; $("login-error").textContent = message || "";
  $("token").focus();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.source) { state.source.close(); state.source = null; }
  setLive(false, "offline");
  showLogin(message);
}

async function start() {
  if (!token()) { showLogin(""); return; }
  try {
    state.me = await getJson("/me");
  } catch (err) {
    if (err.status !== 401) showLogin(`Cannot reach the server: ${err.message}`);
    return;
  }
  $("login").hidden = true; $("board").hidden = false; $("logout").hidden = false;
  $("who").textContent = `${state.me.name || "token"} (${state.me.role})`;
  document.body.classList.toggle("can-review", canReview());
  await Promise.all([loadWatchlists(), loadCameras()]);
  await reload();
  connect();
  if (!state.cameraTimer) state.cameraTimer = setInterval(loadCameras, 10000);
}

// ---- filters and lists --------------------------------------------------------------
function addOption(select, value) {
  if ([...select.options].some((o) => o.value === value)) return;
  const option = document.createElement("option");
  option.value = value; option.textContent = value;
  select.appendChild(option);
}

async function loadWatchlists() {
  try {
    const body = await getJson("/watchlists");
    const items = Array.isArray(body) ? body : (body.items || body.watchlists || []);
    for (const w of items) addOption($("f-watchlist"), typeof w === "string" ? w : w.name);
  } catch (err) { /* the list still works; options also come from alerts seen */ }
}

async function loadCameras() {
  let cameras;
  try { cameras = await getJson("/cameras"); } catch (err) { return; }
  if (!Array.isArray(cameras)) cameras = cameras.items || cameras.cameras || [];
  const list = $("cameras");
  list.replaceChildren();
  if (!cameras.length) {
    const li = document.createElement("li"); li.className = "muted"; li.textContent = "none reported";
    list.appendChild(li);
  }
  for (const cam of cameras) {
    const name = String(cam.name ?? cam.source ?? cam.camera ?? "?");
    addOption($("f-camera"), name);
    const status = String(cam.status ?? cam.state ?? (cam.ok === false ? "down" : "ok"));
    const li = document.createElement("li");
    li.className = `camera-status ${/^(ok|up|live|running|ready)$/i.test(status) ? "ok" : "bad"}`;
    const label = document.createElement("strong"); label.textContent = name;
    const detail = document.createElement("span");
    const extra = Object.entries(cam).filter(([k, v]) =>
      !["name", "source", "camera", "status", "state"].includes(k) && v !== null && typeof v !== "object")
      .map(([k, v]) => `${k.replace(/_/g, " ")}: ${cameraValue(k, v)}`);
    detail.textContent = [status, ...extra].join(" · ");
    li.append(label, detail);
    list.appendChild(li);
  }
}

function cameraValue(key, value) {
  if (typeof value !== "number") return String(value);
  if (/_at$/.test(key) && value > 1e9) {  // a Unix time: how long ago is what matters
    const age = Math.max(0, Date.now() / 1000 - value);
    return age < 90 ? `${Math.round(age)} s ago` : new Date(value * 1000).toLocaleString();
  }
  return String(+value.toFixed(2));
}

function query(extra) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(state.filters)) if (v) params.set(k, v);
  for (const [k, v] of Object.entries(extra)) if (v) params.set(k, v);
  return params.toString();
}

async function reload() {
  state.alerts.clear(); state.cards.clear(); $("alerts").replaceChildren();
  state.cursor = null;
  await loadPage();
}

async function loadPage() {
  try {
    const page = await getJson(`/alerts?${query({ limit: 50, cursor: state.cursor })}`);
    const items = Array.isArray(page) ? page : page.items;
    state.cursor = Array.isArray(page) ? null : page.next_cursor;
    for (const alert of items) upsert(alert, false);
    $("more").hidden = !state.cursor;
    message("");
  } catch (err) {
    if (err.status !== 401) message(`Could not load alerts: ${err.message}`);
  }
  refreshCount();
}

function matches(alert) {
  const f = state.filters;
  return (!f.watchlist || alert.watchlist === f.watchlist) && (!f.camera || alert.source === f.camera)
    && (!f.review || alert.review === f.review);
}

// ---- live stream --------------------------------------------------------------------
function setLive(on, text) { const el = $("live"); el.textContent = text; el.className = `live ${on ? "on" : "off"}`; }

function connect() {
  if (state.source) state.source.close();
  // EventSource cannot send headers, hence the token in the query (the server never logs it).
  const source = new EventSource(`${API}/alerts/stream?access_token=${encodeURIComponent(token())}`);
  state.source = source;
  let dropped = false;
  source.onopen = () => {
    setLive(true, "live");
    if (dropped) { dropped = false; reload(); }  // catch up with what was missed
  };
  source.addEventListener("alert", (event) => upsert(JSON.parse(event.data), true));
  source.onerror = async () => {
    dropped = true;
    setLive(false, "reconnecting");
    if (source.readyState === EventSource.CLOSED) {  // refused outright: is the token still good?
      try { await getJson("/me"); setTimeout(connect, 3000); } catch (_) { /* signOut did it */ }
    }
  };
}

// ---- cards --------------------------------------------------------------------------
function upsert(alert, live) {
  const known = state.alerts.get(alert.alert_id);
  if (known && alert.revision < known.revision) return;  // late, older revision
  addOption($("f-watchlist"), alert.watchlist); addOption($("f-camera"), alert.source);
  state.alerts.set(alert.alert_id, alert);
  let card = state.cards.get(alert.alert_id);
  if (!matches(alert)) {
    if (card) { card.remove(); state.cards.delete(alert.alert_id); }
    refreshCount();
    return;
  }
  if (!card) {
    card = newCard(alert.alert_id);
    state.cards.set(alert.alert_id, card);
    if (live) $("alerts").prepend(card); else $("alerts").appendChild(card);
  }
  fill(card, alert);
  if (live) { card.classList.remove("flash"); void card.offsetWidth; card.classList.add("flash"); }
  refreshCount();
}

function newCard(alertId) {
  const card = $("card-template").content.firstElementChild.cloneNode(true);
  card.dataset.alertId = alertId;
  card.querySelector(".ack").addEventListener("click", () => review(card, "acknowledge"));
  card.querySelector(".reject").addEventListener("click", () => review(card, "reject"));
  return card;
}

const num = (v, digits = 3) => (v === null || v === undefined ? "n/a" : Number(v).toFixed(digits));

function when(alert) {
  const emitted = new Date(alert.emitted_at * 1000).toLocaleString();
  // captured_at is the source's clock: Unix time for cameras, position for a file.
  return alert.captured_at > 1e9 ? new Date(alert.captured_at * 1000).toLocaleString()
    : `${emitted} (at ${num(alert.captured_at, 1)} s in the source)`;
}

function fill(card, a) {
  const set = (cls, text) => { card.querySelector(`.${cls}`).textContent = text; };
  const ev = a.evidence || {};
  card.dataset.review = a.review; card.dataset.revision = a.revision;
  set("subject", a.label || a.subject_label || a.subject_id);
  set("score", `score ${num(a.score)} (threshold ${num(a.threshold)})`);
  set("review-badge", a.review);
  card.querySelector(".review-badge").className = `review-badge ${a.review}`;
  set("watchlist", a.watchlist); set("camera", a.source); set("time", when(a));
  set("state", `${a.state}, revision ${a.revision}`);
  set("faces", `${ev.faces_used ?? "n/a"} of ${ev.frames_seen ?? "n/a"} seen`);
  set("spread", `${num(ev.score_min)} / ${num(ev.score_mean)} / ${num(ev.score_max)}`);
  set("margin", ev.margin === null ? "no other candidate" : num(ev.margin));
  set("ttd", `${num(ev.time_to_decision_s, 2)} s`);
  set("reviewed", a.reviewed_by
    ? `${a.review} by ${a.reviewed_by} at ${new Date(a.reviewed_at * 1000).toLocaleString()}`
      + (a.review_comment ? `: "${a.review_comment}"` : "")
    : "");
  const form = card.querySelector(".review");
  form.hidden = !canReview();
  card.querySelector(".ack").disabled = a.review === "acknowledged";
  card.querySelector(".reject").disabled = a.review === "rejected";
  if (a.crop_available) showCrop(card, a);
}

async function showCrop(card, a) {
  const key = `${a.alert_id}:${a.revision}`;
  if (card.dataset.crop === key) return;
  card.dataset.crop = key;
  try {
    let url = state.crops.get(key);
    if (!url) {  // fetched with the header (an <img src> cannot send one), shown as a blob
      url = URL.createObjectURL(await (await api(`/alerts/${encodeURIComponent(a.alert_id)}/crop`)).blob());
      state.crops.set(key, url);
    }
    const img = document.createElement("img");
    img.src = url; img.alt = `face crop for ${a.subject_id}`;
    card.querySelector(".crop").replaceChildren(img);
  } catch (err) { card.dataset.crop = ""; }
}

async function review(card, verdict) {
  const alertId = card.dataset.alertId;
  const comment = card.querySelector(".comment").value.trim();
  const error = card.querySelector(".review-error");
  error.textContent = "";
  for (const b of card.querySelectorAll("button")) b.disabled = true;
  try {
    const response = await api(`/alerts/${encodeURIComponent(alertId)}/${verdict}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ comment }),
    });
    card.querySelector(".comment").value = "";
    upsert(await response.json(), false);
  } catch (err) {
    error.textContent = err.status === 403 ? "Your role may not review alerts." : err.message;
    const a = state.alerts.get(alertId);
    if (a) fill(card, a);
  }
}

function message(text) { $("message").textContent = text; }

function refreshCount() {
  $("count").textContent = `(${state.cards.size})`;
  $("empty").hidden = state.cards.size > 0;
}

// ---- wiring -------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    start();
  });
  $("logout").addEventListener("click", () => signOut(""));
  $("more").addEventListener("click", loadPage);
  for (const name of ["watchlist", "camera", "review"]) {
    $(`f-${name}`).addEventListener("change", (event) => { state.filters[name] = event.target.value; reload(); });
  }
  start();
});
