// chargingd live dashboard: one EventSource on /api/events, a summary per second.
// Plain DOM, no library, no third-party origin (the daemon serves this file).
// Names from gateways (groups) are set as text, never as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
let windowName = "5m";
let last = null;

function $(id) { return document.getElementById(id); }

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function pct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(1) + "%"; }
function num(v, unit) { return v === null || v === undefined ? "–" : (+v).toLocaleString("en") + (unit || ""); }
function fixed(v, digits) { return v === null || v === undefined ? "–" : (+v).toFixed(digits); }
function secs(v) {
  if (v === null || v === undefined) return "–";
  if (v < 60) return (+v).toFixed(1) + " s";
  const s = Math.round(v);
  return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
}

function grade(node, value, good, warn) {
  node.classList.remove("good", "warn", "bad");
  if (value === null || value === undefined) return;
  node.classList.add(value >= good ? "good" : value >= warn ? "warn" : "bad");
}

function setText(id, text) {
  const n = $(id);
  if (n.textContent === text) return false;
  n.textContent = text;
  return true;
}

// A tile's figure stays on one line inside its tile: shrink its font until it fits
// (132,944 active calls ran past the tile's edge on a 1920 px screen; "90.0%" and
// "1m 15s" did at 1280 px, the ACD on two lines).
function fit(n) {
  n.style.fontSize = "";
  let size = parseFloat(getComputedStyle(n).fontSize);
  while (n.scrollWidth > n.clientWidth && size > 12) {
    size -= 1;
    n.style.fontSize = size + "px";
  }
}
function fitTiles() { document.querySelectorAll(".tile .value").forEach(fit); }
window.addEventListener("resize", fitTiles);

function renderTiles(s) {
  const all = ((s.windows["5m"] || {}).all || {}).all || {};
  const lag = (s.exporter || {}).lag_s;
  const changed = [
    setText("active_calls", num(s.active_calls)),
    setText("calls_per_s", (+s.calls_per_s).toFixed(2)),
    setText("asr", pct(all.asr)),
    setText("ner", pct(all.ner)),
    setText("acd", secs(all.acd_s)),
    setText("attempts", num(all.attempts || 0)),
    setText("refused", num(all.refused || 0)),
    setText("exporter_lag", lag === undefined ? "–" : lag.toFixed(1) + " s"),
  ];
  grade($("asr"), all.asr, 0.5, 0.3);
  grade($("ner"), all.ner, 0.95, 0.85);
  grade($("exporter_lag"), lag === undefined ? null : -lag, -5, -60);
  if (changed.some(Boolean)) fitTiles();  // once every figure is in: the widths are final
}

function renderChart(s) {
  const svg = $("chart_calls");
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const series = s.series || {};
  const authorized = series.authorized || [], refused = series.refused || [];
  const answered = series.answered || [];
  const n = authorized.length;
  if (!n) return;
  const started = authorized.map((a, i) => a + (refused[i] || 0));
  const max = Math.max(1, ...started, ...answered);
  const w = Math.max(300, Math.round(svg.clientWidth || 600)), h = 140, left = 34;
  const slot = (w - left) / n;
  svg.setAttribute("viewBox", "0 0 " + w + " 160");
  const axis = document.createElementNS(SVG, "line");
  axis.setAttribute("class", "axis");
  axis.setAttribute("x1", left); axis.setAttribute("x2", w);
  axis.setAttribute("y1", h); axis.setAttribute("y2", h);
  svg.appendChild(axis);
  for (const [label, y] of [[max, 10], [0, h]]) {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", 2); t.setAttribute("y", y); t.textContent = label;
    svg.appendChild(t);
  }
  const bars = [["started", started, 0], ["answered", answered, 1], ["refused", refused, 2]];
  for (let i = 0; i < n; i++) {
    for (const [cls, values, k] of bars) {
      const v = values[i] || 0;
      if (!v) continue;
      const r = document.createElementNS(SVG, "rect");
      const bh = Math.max(1, (v / max) * (h - 12));
      r.setAttribute("class", "bar " + cls);
      r.setAttribute("x", left + i * slot + k * slot / 3);
      r.setAttribute("width", Math.max(1, slot / 3 - 0.5));
      r.setAttribute("y", h - bh); r.setAttribute("height", bh);
      const title = document.createElementNS(SVG, "title");
      title.textContent = cls + ": " + v + " (" + (n - 1 - i) + " min ago)";
      r.appendChild(title);
      svg.appendChild(r);
    }
  }
  const t = document.createElementNS(SVG, "text");
  t.setAttribute("x", left); t.setAttribute("y", h + 14); t.textContent = "60 min ago";
  svg.appendChild(t);
  const t2 = document.createElementNS(SVG, "text");
  t2.setAttribute("x", w - 24); t2.setAttribute("y", h + 14); t2.textContent = "now";
  svg.appendChild(t2);
}

function bar(cls, value) {
  const track = el("div", "track");
  const fill = el("div", "fill " + cls);
  fill.style.width = value === null || value === undefined ? "0" : Math.round(value * 100) + "%";
  track.appendChild(fill);
  return track;
}

function renderBars(s, dimension) {
  const box = $("bars_" + dimension);
  const groups = ((s.windows[windowName] || {})[dimension]) || {};
  const names = Object.keys(groups).sort((a, b) => groups[b].attempts - groups[a].attempts);
  box.replaceChildren();
  if (!names.length) { box.appendChild(el("p", "muted", "no calls in this window")); return; }
  for (const name of names.slice(0, 12)) {
    const f = groups[name];
    const item = el("div", "item");
    const label = el("div", "name", name);
    label.title = name + ": " + f.attempts + " attempts";
    const pair = el("div", "pair");
    pair.appendChild(bar("asr", f.asr));
    pair.appendChild(bar("ner", f.ner));
    item.appendChild(label);
    item.appendChild(pair);
    const nums = el("div", "num");
    nums.appendChild(el("div", "asr", "ASR " + pct(f.asr)));
    nums.appendChild(el("div", "ner", "NER " + pct(f.ner)));
    item.appendChild(nums);
    box.appendChild(item);
  }
}

function kpiRow(name, f, active, cls) {
  const tr = el("tr", cls);
  const cells = [name, active === undefined ? "" : num(active), num(f.attempts), num(f.answered),
    pct(f.asr), pct(f.ner), secs(f.acd_s), secs(f.aloc_s), num(f.pdd_ms, " ms"), fixed(f.mos, 2),
    num(f.jitter_ms, " ms"), f.loss_pct === null || f.loss_pct === undefined ? "–" : f.loss_pct + "%",
    num(f.busy), num(f.no_answer), num(f.failed), num(f.refused)];
  for (const c of cells) tr.appendChild(el("td", null, c));
  return tr;
}

function renderTable(s) {
  const body = $("kpi_table").tBodies[0];
  const win = s.windows[windowName] || {};
  body.replaceChildren();
  body.appendChild(kpiRow("all calls", ((win.all || {}).all) || {}, s.active_calls, "total"));
  for (const dim of ["gateway", "destination"]) {
    const groups = win[dim] || {};
    for (const name of Object.keys(groups).sort()) {
      const active = dim === "gateway" ? (s.gateways_active || {})[name] || 0 : undefined;
      body.appendChild(kpiRow(dim + " " + name, groups[name], active));
    }
  }
  setText("footnote", "Ratios and averages over fewer than " + s.min_samples +
    " calls show –. A call counts when it ends (its CDR). " + s.processes +
    " process(es) on this host; figures are cluster-wide.");
}

function renderSide(s) {
  const table = $("reserved");
  table.replaceChildren();
  const currencies = Object.keys(s.reserved || {});
  if (!currencies.length) {
    const tr = el("tr"); tr.appendChild(el("td", "muted", "nothing held")); table.appendChild(tr);
  }
  for (const c of currencies) {
    const tr = el("tr");
    tr.appendChild(el("td", null, c));
    tr.appendChild(el("td", null, s.reserved[c]));
    table.appendChild(tr);
  }
  const list = $("alerts");
  list.replaceChildren();
  if (!(s.alerts || []).length) list.appendChild(el("li", "muted", "none"));
  for (const a of s.alerts || []) {
    const li = el("li", "alert " + (a.severity || ""));
    const when = new Date(a.first_ms).toLocaleTimeString("en-GB");
    li.appendChild(el("span", "sev", (a.severity || "").toUpperCase()));
    li.appendChild(el("span", "when", " " + when + " "));
    li.appendChild(el("span", "text", a.summary + (a.count > 1 ? " (×" + a.count + ")" : "")));
    if (a.state && a.state !== "open") li.classList.add("closed");
    li.title = a.kind + " " + a.key;
    list.appendChild(li);
  }
}

function render(s) {
  last = s;
  renderTiles(s);
  renderChart(s);
  renderBars(s, "gateway");
  renderBars(s, "destination");
  renderTable(s);
  renderSide(s);
  setText("updated", "updated " + new Date(s.generated_ms).toLocaleTimeString("en-GB"));
}

function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("summary", (e) => {
    $("link").className = "dot up";
    render(JSON.parse(e.data));
  });
  source.onerror = () => {
    $("link").className = "dot down";
    setText("updated", "reconnecting…");
  };
}

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll(".windows button")) {
    b.addEventListener("click", () => {
      windowName = b.dataset.window;
      for (const o of document.querySelectorAll(".windows button")) o.classList.toggle("on", o === b);
      if (last) render(last);
    });
  }
  connect();
});
