// The ringkv console: polls GET /api/v1/console/state and draws it (api/console.py describes
// the document). Everything is drawn here, from this node's files alone: no library, no CDN.
"use strict";

const STATE_URL = "/api/v1/console/state";
const TOKEN_URL = "/api/v1/auth/token";
const TOKEN_KEY = "ringkv.console.token";
const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#2f6fdf", "#e07b00", "#1a9c6b", "#b83280", "#7a5af8", "#0e9fb8",
                 "#c0392b", "#6b8e23", "#8d6e63", "#d4a017", "#455a64", "#ef6c9f"];
const MAX_RETRY_MS = 10000;

let pollIntervalMs = 1500;
let timer = null;
let lastRingKey = "";
let failures = 0;

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    // Inline style attributes are refused by the page's Content-Security-Policy; the CSSOM is not.
    if (k === "class") node.className = v; else if (k === "style") node.style.cssText = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(n >= 100 ? 0 : 1)) + " " + units[i];
}

function count(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"); }

function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  if (s < 86400) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}

function colourOf(nodeIds) {
  const sorted = [...new Set(nodeIds)].sort();
  const map = new Map(sorted.map((id, i) => [id, PALETTE[i % PALETTE.length]]));
  return (id) => map.get(id) || "#999";
}

// ------------------------------------------------------------------ authentication

// X-Requested-With: a 401 then offers Bearer alone, and the browser opens no password dialog
// of its own over the page's sign-in form (api/http_auth.py).
const SCRIPT_HEADER = { "X-Requested-With": "XMLHttpRequest" };

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { ...SCRIPT_HEADER, Authorization: "Bearer " + token } : { ...SCRIPT_HEADER };
}

function showLogin(message) {
  $("login").hidden = false;
  $("main").hidden = true;
  $("login-error").textContent = message || "";
  $("summary").textContent = "sign in to see the cluster";
}

async function signIn(event) {
  event.preventDefault();
  const user = $("login-user").value;
  const password = $("login-password").value;
  const basic = btoa(unescape(encodeURIComponent(user + ":" + password)));
  const response = await fetch(TOKEN_URL, {
    method: "POST", body: "{}",
    headers: { ...SCRIPT_HEADER, Authorization: "Basic " + basic, "Content-Type": "application/json" },
  });
  if (!response.ok) {
    $("login-error").textContent = await problemText(response);
    return;
  }
  const doc = await response.json();
  sessionStorage.setItem(TOKEN_KEY, doc.token);
  $("login-password").value = "";
  $("login").hidden = true;
  $("main").hidden = false;
  poll();
}

async function problemText(response) {
  try {
    const doc = await response.json();
    return doc.detail || doc.title || response.status + " " + response.statusText;
  } catch (e) {
    return response.status + " " + response.statusText;
  }
}

// ------------------------------------------------------------------ polling

function schedule(ms) {
  clearTimeout(timer);
  timer = setTimeout(poll, ms);
}

async function poll() {
  let response;
  try {
    response = await fetch(STATE_URL, { headers: authHeaders(), cache: "no-store" });
  } catch (e) {
    failures++;
    showError("this node does not answer (" + e.message + "); retrying");
    schedule(Math.min(pollIntervalMs * 2 ** failures, MAX_RETRY_MS));
    return;
  }
  if (response.status === 401) {
    const hadToken = sessionStorage.getItem(TOKEN_KEY) !== null;
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(hadToken ? "the token expired or was revoked: sign in again" : "");
    return;  // polling resumes after sign-in
  }
  if (!response.ok) {
    failures++;
    showError(await problemText(response));
    schedule(Math.min(pollIntervalMs * 2 ** failures, MAX_RETRY_MS));
    return;
  }
  failures = 0;
  const state = await response.json();
  showError("");
  pollIntervalMs = state.poll_interval_ms || pollIntervalMs;
  render(state);
  schedule(pollIntervalMs);
}

function showError(text) {
  $("error").hidden = !text;
  $("error").textContent = text;
}

// ------------------------------------------------------------------ drawing

function render(state) {
  const nodes = state.nodes || [];
  const colour = colourOf(nodes.map((n) => n.node_id).concat(state.ring.nodes, state.ring.pending_nodes || []));
  const up = nodes.filter((n) => n.status === "healthy").length;
  const down = nodes.filter((n) => n.status === "down").length;
  $("summary").textContent =
    `${nodes.length} nodes: ${up} healthy, ${down} down · ${count(state.total_keys)} keys · ` +
    `N=${state.replication_factor} · asked ${state.node_id}` +
    (state.health ? ` · NOT READY: ${state.health}` : "");
  $("summary").dataset.nodes = String(nodes.length);
  renderRing(state.ring, nodes, colour);
  renderNodes(nodes, state.ring, colour);
  renderLocal(state);
  renderHotKeys(state);
  renderOperations(state);
  $("footer").textContent = `ringkv ${state.version} · updated ${new Date().toLocaleTimeString()} · ` +
    `every ${(pollIntervalMs / 1000).toFixed(1)} s`;
}

function arc(cx, cy, r0, r1, a0, a1) {
  // An annulus sector from angle a0 to a1 (radians, clockwise from 12 o'clock).
  const p = (r, a) => [cx + r * Math.sin(a), cy - r * Math.cos(a)];
  const large = a1 - a0 > Math.PI ? 1 : 0;
  const [x0, y0] = p(r1, a0), [x1, y1] = p(r1, a1), [x2, y2] = p(r0, a1), [x3, y3] = p(r0, a0);
  return `M${x0.toFixed(2)},${y0.toFixed(2)}A${r1},${r1} 0 ${large} 1 ${x1.toFixed(2)},${y1.toFixed(2)}` +
         `L${x2.toFixed(2)},${y2.toFixed(2)}A${r0},${r0} 0 ${large} 0 ${x3.toFixed(2)},${y3.toFixed(2)}Z`;
}

function renderRing(ring, nodes, colour) {
  const downSet = new Set(nodes.filter((n) => n.status === "down").map((n) => n.node_id));
  const key = JSON.stringify([ring.owners, ring.pending_owners, ring.nodes, ring.pending_nodes, [...downSet]]);
  if (key === lastRingKey) return;
  lastRingKey = key;
  const svg = $("ring");
  svg.replaceChildren();
  const q = ring.partitions, step = 2 * Math.PI / q, moving = new Set(ring.moving);
  // Consecutive partitions of one owner become one sector: fewer elements, same picture.
  const runs = [];
  for (let p = 0; p < q; p++) {
    const owner = ring.nodes[ring.owners[p]];
    const last = runs[runs.length - 1];
    if (last && last.owner === owner && last.moving === moving.has(p)) last.end = p + 1;
    else runs.push({ owner, start: p, end: p + 1, moving: moving.has(p) });
  }
  for (const run of runs) {
    const path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", arc(160, 160, 92, 140, run.start * step, run.end * step));
    path.setAttribute("fill", colour(run.owner));
    path.setAttribute("data-owner", run.owner);
    if (downSet.has(run.owner)) path.setAttribute("fill-opacity", "0.3");
    const title = document.createElementNS(SVG_NS, "title");
    title.textContent = `partitions ${run.start}–${run.end - 1}: owner ${run.owner}` +
      (downSet.has(run.owner) ? " (down)" : "") + (run.moving ? " · replicas moving" : "");
    path.append(title);
    svg.append(path);
  }
  if (ring.pending_owners) {
    for (const p of ring.moving) {
      const target = ring.pending_nodes[ring.pending_owners[p]];
      const mark = document.createElementNS(SVG_NS, "path");
      mark.setAttribute("d", arc(160, 160, 144, 156, p * step, (p + 1) * step));
      mark.setAttribute("fill", colour(target));
      mark.setAttribute("class", "pending-move");
      const title = document.createElementNS(SVG_NS, "title");
      title.textContent = `partition ${p}: moving (owner after the change: ${target})`;
      mark.append(title);
      svg.append(mark);
    }
  }
  const label = document.createElementNS(SVG_NS, "text");
  label.setAttribute("x", "160"); label.setAttribute("y", "156");
  label.setAttribute("text-anchor", "middle"); label.setAttribute("font-size", "20");
  label.textContent = `${q} partitions`;
  const sub = document.createElementNS(SVG_NS, "text");
  sub.setAttribute("x", "160"); sub.setAttribute("y", "178");
  sub.setAttribute("text-anchor", "middle"); sub.setAttribute("font-size", "13"); sub.setAttribute("fill", "#667085");
  sub.textContent = `N=${ring.replicas} · ${ring.moving.length} moving`;
  svg.append(label, sub);

  const legend = $("ring-legend");
  legend.replaceChildren();
  for (const id of [...new Set(ring.nodes.concat(ring.pending_nodes || []))].sort()) {
    const owned = ring.owners.filter((i) => ring.nodes[i] === id).length;
    legend.append(el("span", {}, el("i", { class: "swatch", style: `background:${colour(id)}` }),
                     `${id} (${owned})`));
  }
  $("ring-note").textContent = ring.pending_owners
    ? "The outer marks are partitions whose replicas are moving, in the colour of their owner after the change."
    : "Each sector is a run of partitions, coloured by its owner (first replica); faded: the owner is down.";
}

function renderNodes(nodes, ring, colour) {
  const body = $("nodes").querySelector("tbody");
  body.replaceChildren();
  const hints = ring.hints_pending_for || {};
  for (const n of nodes) {
    const move = n.move && n.move.partitions_total
      ? el("span", {}, el("span", { class: "bar" },
          el("i", { style: `width:${Math.round(100 * n.move.partitions_done / n.move.partitions_total)}%` })),
          ` ${n.move.kind} ${n.move.partitions_done}/${n.move.partitions_total}`)
      : (n.move && n.move.kind ? `${n.move.kind} ${n.move.phase || ""}` : "–");
    const row = el("tr", { "data-node": n.node_id, "data-status": n.status, class: n.status },
      el("td", {}, el("i", { class: "swatch", style: `background:${colour(n.node_id)}` }), " ", n.node_id,
         el("br"), el("small", {}, (n.datacenter ? `${n.datacenter} · ` : "") + (n.address || n.error || ""))),
      el("td", {}, el("span", { class: `badge ${n.status}` }, n.status), " ", el("small", {}, n.role || "")),
      el("td", {}, n.phi === undefined || n.phi === null ? "–" : Number(n.phi).toFixed(2)),
      el("td", {}, count(n.keys_count)),
      el("td", {}, bytes(n.bytes_on_disk)),
      el("td", {}, bytes(n.rss_bytes)),
      el("td", {}, `${n.primary_partitions} / ${n.replica_partitions}`),
      el("td", {}, count(hints[n.node_id] || 0)),
      el("td", {}, move),
      el("td", {}, duration(n.uptime_ms)));
    body.append(row);
  }
}

const LOCAL_LABELS = {
  hints_pending: "hints pending", hints_stored: "hints stored", hints_delivered: "hints delivered",
  hints_dropped_full: "hints dropped (full)", hints_expired: "hints expired",
  ae_partitions_completed: "AE partitions compared", ae_comparisons: "AE comparisons", ae_in_sync: "AE in sync",
  ae_keys_pushed: "AE keys pushed", ae_keys_pulled: "AE keys pulled", ae_traffic_bytes: "AE traffic",
  ae_failures: "AE failures", gossip_rounds: "gossip rounds", gossip_exchanges_failed: "gossip failures",
  nodes_down: "held down", max_stall_ms: "max loop stall",
};

function renderLocal(state) {
  $("local-name").textContent = `(on ${state.node_id})`;
  const list = $("local");
  list.replaceChildren();
  if (!state.local) {
    list.append(el("div", {}, el("dt", {}, "this user may not run INFO"), el("dd", {}, "")));
    return;
  }
  for (const [name, label] of Object.entries(LOCAL_LABELS)) {
    if (!(name in state.local)) continue;
    let v = state.local[name];
    if (name === "ae_traffic_bytes") v = bytes(v);
    else if (name === "max_stall_ms") v = v + " ms";
    else if (name === "nodes_down") v = v || "none";
    else v = count(v);
    list.append(el("div", {}, el("dt", {}, label), el("dd", {}, v)));
  }
}

function renderHotKeys(state) {
  $("hot-keys-name").textContent = `(coordinated by ${state.node_id})`;
  const body = $("hot-keys").querySelector("tbody");
  body.replaceChildren();
  const hot = state.hot_keys;
  if (!hot) {
    $("hot-keys-note").textContent = "this user may not run RINGKV.HOTKEYS";
    return;
  }
  for (const k of hot.keys) {  // RINGKV.HOTKEYS's entries (docs/hot-keys.md)
    body.append(el("tr", { "data-key": k.key }, el("td", {}, k.namespace), el("td", {}, k.key),
      el("td", {}, k.per_s.toFixed(1)), el("td", {}, count(k.reads)), el("td", {}, count(k.writes)),
      el("td", {}, k.hot ? "yes" : "")));
  }
  $("hot-keys-note").textContent = hot.keys.length
    ? `one request in about ${hot.sample_every} counted; counts halve every ${duration(hot.half_life_ms)}`
    : "no request counted lately";
}

function renderOperations(state) {
  const box = $("operations");
  box.replaceChildren();
  if (state.operations === null) box.append(el("p", { class: "note" }, "this user may not list operations"));
  const ops = state.operations || [];
  for (const op of ops) {  // node/operations.py's documents
    const total = op.total || 0, done = op.done || 0;
    const bar = total ? el("span", { class: "bar" }, el("i", { style: `width:${Math.round(100 * done / total)}%` })) : "";
    const eta = op.state === "running" && op.eta_s !== null && op.eta_s !== undefined
      ? ` · about ${duration(op.eta_s * 1000)} left` : "";
    const detail = `${op.state}${op.phase ? " · " + op.phase : ""}` +
      (total ? ` · ${count(done)}/${count(total)} ${op.unit || ""}` : "") + eta + (op.error ? ` · ${op.error}` : "");
    box.append(el("div", { class: "op", "data-operation": op.id, "data-state": op.state }, bar,
      ` ${op.kind} ${op.id} `, el("small", {}, detail)));
  }
  const membership = state.membership;
  if (membership && membership.move && membership.move.kind) {
    const m = membership.move;
    const bar = m.partitions_total
      ? el("span", { class: "bar" }, el("i", { style: `width:${Math.round(100 * m.partitions_done / m.partitions_total)}%` }))
      : "";
    box.append(el("div", { class: "op" }, bar,
      ` ${m.kind} on ${state.node_id}: ${m.phase || ""} ${m.partitions_done}/${m.partitions_total} partitions`));
  }
  if (membership && membership.pending && membership.pending.length) {
    box.append(el("div", { class: "op" }, `ring changing to: ${membership.pending.join(", ")}`));
  }
  if (!box.childElementCount) box.append(el("p", { class: "note" }, "no membership change or operation in flight"));
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (e) => { signIn(e).catch((err) => { $("login-error").textContent = String(err); }); });
  poll();
});
