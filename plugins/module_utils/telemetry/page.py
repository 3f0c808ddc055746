# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The status page: one self-contained HTML document (no external assets), and its JSON."""

from __future__ import annotations

import json
import math


def clean(value):
    """JSON-safe: non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return dict((str(k), clean(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def status_json(monitors):
    return json.dumps({'hats': [clean(m.snapshot()) for m in monitors]}, sort_keys=True)


def history_json(monitors):
    return json.dumps({'hats': dict((m.name, clean(m.history_rows())) for m in monitors),
                       'columns': ['time', 'temperature_c', 'current_a', 'input_power_w', 'fan_rpm', 'fan_drive_ratio']})


PAGE = r'''<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Cluster hat status</title>
<style>
body{font-family:system-ui,sans-serif;margin:1em;background:#fafafa;color:#222}
h1{font-size:1.3em}h2{font-size:1.1em;margin:1.2em 0 .4em}
table{border-collapse:collapse;margin:.3em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#eee}.off{color:#888}.on{color:#070;font-weight:bold}.bad{color:#b00;font-weight:bold}
.stale{color:#a60}.plots{display:flex;flex-wrap:wrap;gap:.8em}figure{margin:0}
figcaption{font-size:.85em;color:#555}canvas{background:#fff;border:1px solid #ddd}
#meta{font-size:.8em;color:#666}
</style></head>
<body data-updates="0">
<h1>Cluster hat status</h1>
<div id="meta">loading&hellip;</div>
<div id="hats"></div>
<script>
"use strict";
const REFRESH_MS = __REFRESH_MS__;
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
function fmt(v, digits, unit) { return (v === null || v === undefined) ? "\u2013" : v.toFixed(digits) + (unit ? " " + unit : ""); }
function age(a) { return (a === null || a === undefined) ? "never" : a.toFixed(1) + " s ago"; }
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function section(hat) {
  const id = "hat-" + hat;
  let s = document.getElementById(id);
  if (s) return s;
  s = el("section", {id: id});
  s.appendChild(el("h2", {}, "Hat " + hat));
  const t = el("table", {id: id + "-nodes"});
  const head = el("tr");
  for (const h of ["node", "power", "current", "temperature", "USB boot"]) head.appendChild(el("th", {}, h));
  t.appendChild(head);
  for (const n of [1, 2, 3, 4]) {
    const r = el("tr");
    r.appendChild(el("th", {}, String(n)));
    for (const f of ["power", "current", "temp", "usb"]) r.appendChild(el("td", {id: id + "-node" + n + "-" + f}));
    t.appendChild(r);
  }
  s.appendChild(t);
  const t2 = el("table", {});
  for (const [k, label] of [["input", "input"], ["fan", "fan"], ["regime", "fan control"], ["ages", "readings"]]) {
    const r = el("tr");
    r.appendChild(el("th", {}, label));
    r.appendChild(el("td", {id: id + "-" + k, style: "text-align:left"}));
    t2.appendChild(r);
  }
  s.appendChild(t2);
  const plots = el("div", {"class": "plots"});
  for (const [k, label] of [["temp", "temperature per node, \u00b0C"], ["current", "node current, A"],
                            ["power", "input power, W"], ["fan", "fan RPM"]]) {
    const f = el("figure");
    f.appendChild(el("canvas", {id: id + "-plot-" + k, width: 360, height: 160}));
    const cap = el("figcaption", {}, label + " (last hour)");
    if (k === "temp" || k === "current") {
      [1, 2, 3, 4].forEach((n, i) => cap.appendChild(el("span", {style: "color:" + COLORS[i]}, " \u25a0 node " + n)));
    }
    f.appendChild(cap);
    plots.appendChild(f);
  }
  s.appendChild(plots);
  document.getElementById("hats").appendChild(s);
  return s;
}
function show(h) {
  const id = "hat-" + h.hat;
  section(h.hat);
  for (const n of [1, 2, 3, 4]) {
    const d = h.nodes[String(n)];
    const p = document.getElementById(id + "-node" + n + "-power");
    p.textContent = d.on === null ? "\u2013" : (d.on ? "on" : "off");
    p.className = d.on ? "on" : "off";
    document.getElementById(id + "-node" + n + "-current").textContent = fmt(d.current_a, 3, "A");
    const t = document.getElementById(id + "-node" + n + "-temp");
    t.textContent = fmt(d.temperature_c, 1, "\u00b0C");
    t.className = d.temperature_error ? "bad" : "";
    document.getElementById(id + "-node" + n + "-usb").textContent = d.usb_boot === null ? "unknown" : (d.usb_boot ? "asserted" : "released");
  }
  const i = h.input;
  document.getElementById(id + "-input").textContent = i.saturated ? fmt(i.voltage_v, 2, "V") + ", current over the shunt's range (saturated)"
    : fmt(i.power_w, 2, "W") + " at " + fmt(i.voltage_v, 2, "V") + ", " + fmt(i.current_a, 3, "A");
  const f = h.fan.reading;
  document.getElementById(id + "-fan").textContent = f ? (f.rpm + " RPM, drive " + (f.drive_ratio * 100).toFixed(0) +
    " %, " + f.mode + " mode" + (f.stalled ? ", STALLED" : "")) : "\u2013";
  const r = document.getElementById(id + "-regime");
  r.textContent = h.fan.regime + (h.fan.reason ? " (" + h.fan.reason + ")" : "");
  r.className = h.fan.regime === "failsafe" ? "bad" : "";
  const a = document.getElementById(id + "-ages");
  a.textContent = "console " + age(h.console.age_s) + (h.console.error ? " [" + h.console.error + "]" : "") +
    ", input " + age(h.input.age_s) + ", fan " + age(h.fan.age_s);
  a.className = h.console.error || h.input.error || h.fan.error ? "stale" : "";
}
function plot(canvas, t0, t1, series) {
  const c = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 44, B = 16;
  c.clearRect(0, 0, W, H);
  let lo = Infinity, hi = -Infinity;
  for (const s of series) for (const p of s) if (p[1] !== null) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); }
  if (lo === Infinity) { c.fillStyle = "#888"; c.fillText("no data", W / 2 - 20, H / 2); return 0; }
  if (hi - lo < 1e-9) { hi += 1; lo -= 1; }
  c.strokeStyle = "#ccc"; c.fillStyle = "#555"; c.font = "10px sans-serif";
  for (let k = 0; k <= 4; k++) {
    const v = lo + (hi - lo) * k / 4, y = H - B - (H - B - 6) * k / 4;
    c.beginPath(); c.moveTo(L, y); c.lineTo(W, y); c.stroke();
    c.fillText(v.toPrecision(3), 2, y + 3);
  }
  const x = t => L + (W - L - 4) * (t - t0) / Math.max(1, t1 - t0);
  const y = v => H - B - (H - B - 6) * (v - lo) / (hi - lo);
  let drawn = 0;
  series.forEach((s, k) => {
    c.strokeStyle = COLORS[k % COLORS.length]; c.beginPath();
    let pen = false;
    for (const p of s) {
      if (p[1] === null) { pen = false; continue; }
      if (pen) c.lineTo(x(p[0]), y(p[1])); else c.moveTo(x(p[0]), y(p[1]));
      pen = true; drawn++;
    }
    c.stroke();
  });
  return drawn;
}
function plots(name, rows) {
  const id = "hat-" + name;
  if (!rows.length) return;
  const t1 = rows[rows.length - 1][0], t0 = Math.max(rows[0][0], t1 - 3600);
  const recent = rows.filter(r => r[0] >= t0);
  const per = k => [0, 1, 2, 3].map(n => recent.map(r => [r[0], r[k][n]]));
  const drawn = plot(document.getElementById(id + "-plot-temp"), t0, t1, per(1))
    + plot(document.getElementById(id + "-plot-current"), t0, t1, per(2))
    + plot(document.getElementById(id + "-plot-power"), t0, t1, [recent.map(r => [r[0], r[3]])])
    + plot(document.getElementById(id + "-plot-fan"), t0, t1, [recent.map(r => [r[0], r[4]])]);
  document.getElementById(id).setAttribute("data-points", String(drawn));
}
async function update() {
  try {
    const s = await (await fetch("api/status", {cache: "no-store"})).json();
    for (const h of s.hats) show(h);
    const hist = await (await fetch("api/history", {cache: "no-store"})).json();
    for (const name in hist.hats) plots(name, hist.hats[name]);
    const n = Number(document.body.getAttribute("data-updates")) + 1;
    document.body.setAttribute("data-updates", String(n));
    document.getElementById("meta").textContent = "updated " + new Date().toLocaleTimeString() + " (every " + REFRESH_MS / 1000 + " s)";
  } catch (e) {
    document.getElementById("meta").textContent = "cannot reach the exporter: " + e;
  }
}
update();
setInterval(update, REFRESH_MS);
</script>
</body></html>
'''


def page(refresh_s=5.0):
    return PAGE.replace('__REFRESH_MS__', str(int(refresh_s * 1000)))
