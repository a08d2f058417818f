/* Small SVG plots for the dashboard: line charts over time and grouped bar charts. No dependencies. */
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const exp = Math.pow(10, Math.floor(Math.log10(value)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * exp >= value) return m * exp;
  return 10 * exp;
}

function fmtNum(v) {
  if (Math.abs(v) >= 1000) return (v / 1000).toFixed(1) + "k";
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}

function fmtTime(t, span) {
  const d = new Date(t * 1000);
  const two = n => String(n).padStart(2, "0");
  const hm = two(d.getHours()) + ":" + two(d.getMinutes());
  return span < 600 ? hm + ":" + two(d.getSeconds()) : hm;  // seconds only when the plot spans minutes
}

function frame(svg, yMax, pad) {
  const box = svg.viewBox.baseVal;
  const w = box.width, h = box.height;
  svg.replaceChildren();
  const plot = { x0: pad.left, x1: w - pad.right, y0: h - pad.bottom, y1: pad.top };
  for (let i = 0; i <= 4; i++) {
    const y = plot.y0 - (plot.y0 - plot.y1) * i / 4;
    svg.appendChild(svgEl("line", { class: "grid", x1: plot.x0, x2: plot.x1, y1: y, y2: y }));
    svg.appendChild(svgEl("text", { x: plot.x0 - 4, y: y + 3, "text-anchor": "end" }, fmtNum(yMax * i / 4)));
  }
  svg.appendChild(svgEl("line", { class: "axis", x1: plot.x0, x2: plot.x1, y1: plot.y0, y2: plot.y0 }));
  return plot;
}

function empty(svg, text) {
  const box = svg.viewBox.baseVal;
  svg.replaceChildren(svgEl("text", { class: "empty", x: box.width / 2, y: box.height / 2, "text-anchor": "middle" },
                                text || "no data yet"));
}

/* series: [{points: [[t, y], ...], label, cls}] drawn against a shared time axis. */
function lineChart(svg, series, opts) {
  const all = series.flatMap(s => s.points);
  if (!all.length) return empty(svg, opts && opts.empty);
  const pad = { left: 40, right: 10, top: 12, bottom: 22 };
  const tMin = Math.min(...all.map(p => p[0])), tMax = Math.max(...all.map(p => p[0]));
  const yMax = niceMax(Math.max(...all.map(p => p[1])));
  const plot = frame(svg, yMax, pad);
  const span = Math.max(tMax - tMin, 1);
  const X = t => plot.x0 + (plot.x1 - plot.x0) * (t - tMin) / span;
  const Y = v => plot.y0 - (plot.y0 - plot.y1) * v / yMax;
  for (let i = 0; i <= 4; i++) {
    const t = tMin + span * i / 4;
    svg.appendChild(svgEl("text", { x: X(t), y: plot.y0 + 14, "text-anchor": "middle" }, fmtTime(t, span)));
  }
  series.forEach((s, index) => {
    if (!s.points.length) return;
    const d = s.points.map((p, i) => (i ? "L" : "M") + X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1)).join(" ");
    const path = svgEl("path", { class: "line" + (index ? " second" : ""), d: d, "data-points": s.points.length });
    path.appendChild(svgEl("title", {}, s.label));
    svg.appendChild(path);
    if (s.points.length === 1) {
      svg.appendChild(svgEl("circle", { cx: X(s.points[0][0]), cy: Y(s.points[0][1]), r: 3, class: "bar" }));
    }
    const ly = plot.y1 + 8 + 12 * index;
    svg.appendChild(svgEl("line", { class: "line" + (index ? " second" : ""), x1: plot.x1 - 150, x2: plot.x1 - 132,
                                    y1: ly - 3, y2: ly - 3 }));
    svg.appendChild(svgEl("text", { x: plot.x1 - 128, y: ly, "text-anchor": "start" }, s.label));
  });
}

/* groups: [{label, values: [a, b]}], names: legend of the values. */
function barChart(svg, groups, names, opts) {
  if (!groups.length) return empty(svg, opts && opts.empty);
  const pad = { left: 44, right: 10, top: 12, bottom: 34 };
  const yMax = niceMax(Math.max(...groups.flatMap(g => g.values)));
  const plot = frame(svg, yMax, pad);
  const slot = (plot.x1 - plot.x0) / groups.length;
  const width = Math.min(40, slot / (names.length + 1));
  groups.forEach((g, gi) => {
    g.values.forEach((v, vi) => {
      const x = plot.x0 + slot * gi + slot / 2 - width * names.length / 2 + width * vi;
      const y = plot.y0 - (plot.y0 - plot.y1) * v / yMax;
      const bar = svgEl("rect", { class: "bar" + (vi ? " second" : ""), x: x, y: y, width: width - 2,
                                  height: Math.max(0, plot.y0 - y) });
      bar.appendChild(svgEl("title", {}, `${g.label}: ${names[vi]} ${fmtNum(v)}`));
      svg.appendChild(bar);
    });
    svg.appendChild(svgEl("text", { x: plot.x0 + slot * gi + slot / 2, y: plot.y0 + 14, "text-anchor": "middle" },
                          (g.label || "(none)").slice(0, 18)));
  });
  names.forEach((n, i) => svg.appendChild(svgEl("text", { x: plot.x1 - 4, y: plot.y1 + 10 + 12 * i,
                                                          "text-anchor": "end" }, (i ? "light: " : "dark: ") + n)));
}

window.vmPlot = { lineChart, barChart };
