// herobench labelling page: shows the run's current batch, collects good/bad + best, submits once.
// No framework and no external resources; every request carries the run's token (a header for the API,
// the query string for <img>, which cannot send headers).
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
const POLL_MS = 800;
const $ = (id) => document.getElementById(id);

let batch = null;      // the batch shown (from /api/state)
let marks = null;      // {good: [bool], best: int|null, focus: int}
let sent = false;      // this batch was submitted
let polling = null;

function api(path, options = {}) {
  const headers = Object.assign({"X-Herobench-Token": TOKEN}, options.headers || {});
  return fetch(path, Object.assign({}, options, {headers, cache: "no-store"}));
}
const imgUrl = (id, which) => `/api/image/${encodeURIComponent(id)}/${which}.png?token=${encodeURIComponent(TOKEN)}`;
// marks are kept per batch under the server's store_key: the same batch of the same run after a crash and
// resume (same pictures, a new token and batch id) finds them again; the token is never stored
const storeKey = () => batch.store_key;

function setStatus(state, text) {
  document.body.dataset.state = state;
  if ($("status").textContent !== text) $("status").textContent = text;  // no live-region chatter
}

function save() {
  try { localStorage.setItem(storeKey(), JSON.stringify(marks)); } catch (e) { /* private mode: no restore */ }
}

function restore(n) {
  try {
    const m = JSON.parse(localStorage.getItem(storeKey()) || "null");
    if (m && Array.isArray(m.good) && m.good.length === n) return m;
  } catch (e) { /* ignore a corrupt entry */ }
  return {good: new Array(n).fill(false), best: null, focus: 0};
}

// ------------------------------------------------------------------ rendering
function render() {
  const b = batch, n = b.n;
  $("where").textContent = `task ${b.task || "?"} · iteration ${b.iteration} · ${n} images · protocol ${b.protocol}`;
  const after = b.labels_spent + n;
  $("budget-text").textContent = `labels used: ${b.labels_spent} + ${n} in this batch = ${after} of ${b.budget_labels}`;
  $("bar-spent").style.width = `${100 * b.labels_spent / Math.max(1, b.budget_labels)}%`;
  $("bar-batch").style.width = `${100 * n / Math.max(1, b.budget_labels)}%`;

  const same = b.prompts.every((p) => p === b.prompts[0]);
  const prompt = $("prompt");
  prompt.textContent = same ? "Prompt: " : "Prompts vary (shown under each image)";
  if (same) { const q = document.createElement("q"); q.textContent = b.prompts[0]; prompt.appendChild(q); }

  $("prev-panel").hidden = !b.star;
  const prev = $("prev-best");
  prev.textContent = "";
  if (b.has_prev_best && b.prev_best_picture) {
    const img = document.createElement("img");
    img.src = imgUrl(b.id, "best"); img.alt = "previous best image"; img.id = "prev-img";
    prev.appendChild(img);
  } else {
    prev.textContent = b.has_prev_best ? "A best was picked earlier (no stored picture)."
                                       : "None yet: star the best good image of this batch.";
  }

  const grid = $("grid");
  grid.textContent = "";
  grid.dataset.batch = b.id;
  for (let i = 0; i < n; i++) {
    const fig = document.createElement("figure");
    fig.className = "cell"; fig.dataset.i = i; fig.setAttribute("role", "option");
    const img = document.createElement("img");
    img.src = imgUrl(b.id, i); img.alt = `image ${i + 1}`; img.draggable = false;
    const cap = document.createElement("figcaption");
    const label = document.createElement("span"); label.className = "label";
    cap.appendChild(label);
    if (!same) { const p = document.createElement("span"); p.className = "p"; p.textContent = b.prompts[i]; p.title = b.prompts[i]; cap.appendChild(p); }
    if (b.star) {
      const star = document.createElement("button");
      star.type = "button"; star.className = "star"; star.title = "best (s)"; star.textContent = "☆";
      star.tabIndex = -1;  // the page's own keys drive it; a focused button would also take Space/Enter
      star.addEventListener("click", (ev) => { ev.stopPropagation(); star.blur(); focus(i); toggleStar(i); });
      cap.appendChild(star);
    }
    fig.append(img, cap);
    fig.addEventListener("click", () => { focus(i); setGood(i, !marks.good[i]); });
    grid.appendChild(fig);
  }
  paint();
}

function paint() {
  const cells = $("grid").children;
  for (let i = 0; i < cells.length; i++) {
    const c = cells[i], g = marks.good[i], s = marks.best === i;
    c.classList.toggle("good", g); c.classList.toggle("bad", !g);
    c.classList.toggle("starred", s); c.classList.toggle("focused", marks.focus === i);
    c.setAttribute("aria-selected", String(g));
    c.querySelector(".label").textContent = `${i + 1} · ${g ? "good" : "bad"}`;
    const star = c.querySelector(".star");
    if (star) star.textContent = s ? "★" : "☆";
  }
  const good = marks.good.filter(Boolean).length;
  let best = "";
  if (batch.star) best = marks.best === null ? (batch.has_prev_best ? " · best: keep the previous" : " · best: none yet")
                                             : ` · best: image ${marks.best + 1}`;
  $("counts").textContent = `${good} good · ${batch.n - good} bad${best}`;
  $("submit").disabled = sent;
}

// ------------------------------------------------------------------ editing
function focus(i) {
  if (!batch || i < 0 || i >= batch.n) return;
  marks.focus = i;
  paint();
  const c = $("grid").children[i];
  if (c && c.scrollIntoView) c.scrollIntoView({block: "nearest"});
}
function setGood(i, g) {
  if (sent) return;
  marks.good[i] = g;
  if (!g && marks.best === i) marks.best = null;   // the best must be a good image
  $("message").textContent = "";
  save(); paint();
}
function toggleStar(i) {
  if (sent || !batch.star) return;
  if (marks.best === i) { marks.best = null; } else { marks.best = i; marks.good[i] = true; }
  $("message").textContent = "";
  save(); paint();
}
function columns() {
  const cells = $("grid").children;
  if (!cells.length) return 1;
  const top = cells[0].offsetTop;
  let k = 0;
  while (k < cells.length && cells[k].offsetTop === top) k++;
  return Math.max(1, k);
}

async function submit() {
  if (!batch || sent) return;
  if (batch.needs_best && marks.best === null && marks.good.some(Boolean)) {
    $("message").textContent = "Star the best good image: there is no previous best to keep yet.";
    return;
  }
  $("submit").disabled = true;
  let res, body;
  try {
    res = await api("/api/submit", {method: "POST", headers: {"Content-Type": "application/json"},
                                    body: JSON.stringify({batch: batch.id, good: marks.good, best: marks.best})});
    body = await res.json();
  } catch (e) {
    $("message").textContent = "Could not reach the run; your marks are kept — try again.";
    $("submit").disabled = false;
    return;
  }
  if (!res.ok) {
    $("message").textContent = body.error || `refused (${res.status})`;
    $("submit").disabled = false;
    if (res.status === 409) tick();
    return;
  }
  sent = true;
  try { localStorage.removeItem(storeKey()); } catch (e) { /* ignore */ }
  paint();
  tick();
}

document.addEventListener("keydown", (ev) => {
  if (!batch || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.target && ["INPUT", "TEXTAREA", "SUMMARY"].includes(ev.target.tagName)) return;
  const i = marks.focus, k = ev.key;
  let used = true;
  if (k === "ArrowRight") focus(Math.min(batch.n - 1, i + 1));
  else if (k === "ArrowLeft") focus(Math.max(0, i - 1));
  else if (k === "ArrowDown") focus(Math.min(batch.n - 1, i + columns()));
  else if (k === "ArrowUp") focus(Math.max(0, i - columns()));
  else if (/^[1-9]$/.test(k)) focus(Number(k) - 1);
  else if (k === "g") setGood(i, true);
  else if (k === "b") setGood(i, false);
  else if (k === " ") setGood(i, !marks.good[i]);
  else if (k === "s") toggleStar(i);
  else if (k === "Enter") submit();
  else used = false;
  if (used) ev.preventDefault();
});

// ------------------------------------------------------------------ polling
async function tick() {
  let state;
  try {
    const res = await api("/api/state");
    if (res.status === 403) { setStatus("error", "This URL's token is not valid for the running run: open the URL it printed."); return; }
    state = await res.json();
  } catch (e) {
    setStatus("error", "Cannot reach the run: it has finished or stopped. When it runs again, open the URL it prints.");
    return;
  }
  if (state.status === "closed") {
    sent = true; if (batch) paint();
    setStatus("error", "The run has finished or stopped: nothing more to label here. When it runs again, open the URL it prints.");
    return;
  }
  const b = state.batch;
  if (b && (!batch || batch.id !== b.id)) {  // a new batch (or the first one after a reload)
    batch = b; sent = false; marks = restore(b.n);
    $("message").textContent = "";
    render();
  }
  const saved = state.saved_through ? ` Labels up to batch ${state.saved_through} are saved.` : "";
  if (state.status === "labelling") {
    setStatus("labelling", `Label batch ${b.iteration}.${saved}`);
  } else if (state.status === "submitted") {
    if (!sent) { sent = true; paint(); }  // submitted before a reload, or from another tab
    setStatus("submitted", `Batch ${b.iteration} sent. The run is saving the labels and learning; the next batch appears here by itself.`);
  } else {
    setStatus("waiting", `Waiting for the run's next batch (it is sampling, learning or evaluating).${saved}`);
  }
}

window.addEventListener("DOMContentLoaded", () => {
  $("submit").addEventListener("click", (ev) => { ev.currentTarget.blur(); submit(); });
  tick();
  polling = setInterval(tick, POLL_MS);
});
