/* Eddy's chart library: horizontal bar charts and scatter plots drawn as inline SVG.
 * Served from the package (no CDN), so the review pages work offline.
 * Usage: <div class="chart" data-kind="bars|scatter" data-chart='JSON'></div>
 *   bars:    [{"label": "...", "value": 0.4}, ...]  (negative values drawn to the left)
 *   scatter: {"x": [...], "y": [...]}              (y = effect; a zero line is drawn)
 *   lines:   {"x": ["2026-01-05", ...], "series": [{"label": "...", "y": [..., null]}],
 *             "references": [{"label": "...", "value": 0.8}], "percent": true}
 *            (one line per series over the weeks; each reference a dashed level)
 */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, text) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(v) { return Math.abs(v) >= 10 ? v.toFixed(0) : v.toFixed(2); }

  function bars(host, items) {
    var rowH = 26, labelW = 300, width = Math.max(host.clientWidth || 760, 520), plotW = width - labelW - 70;
    var svg = el("svg", {width: width, height: items.length * rowH + 10, role: "img", class: "bars"});
    var max = items.reduce(function (m, d) { return Math.max(m, Math.abs(d.value)); }, 1e-9);
    var hasNeg = items.some(function (d) { return d.value < 0; });
    var zero = labelW + (hasNeg ? plotW / 2 : 0), scale = (hasNeg ? plotW / 2 : plotW) / max;
    items.forEach(function (d, i) {
      var y = i * rowH + 4, w = Math.abs(d.value) * scale;
      var g = el("g", {class: "bar", "data-label": d.label, "data-value": d.value});
      g.appendChild(el("text", {x: labelW - 8, y: y + 15, "text-anchor": "end", class: "label"}, d.label));
      g.appendChild(el("rect", {x: d.value < 0 ? zero - w : zero, y: y, width: Math.max(w, 1), height: rowH - 8,
                                class: d.value < 0 ? "neg" : "pos"}));
      g.appendChild(el("text", {x: d.value < 0 ? zero - w - 4 : zero + w + 4, y: y + 15,
                                "text-anchor": d.value < 0 ? "end" : "start", class: "value"}, fmt(d.value)));
      svg.appendChild(g);
    });
    svg.appendChild(el("line", {x1: zero, x2: zero, y1: 0, y2: items.length * rowH + 6, class: "axis"}));
    host.appendChild(svg);
  }

  function scatter(host, data, xlabel) {
    var width = 360, height = 240, pad = 40;
    var xs = data.x, ys = data.y;
    var svg = el("svg", {width: width, height: height, role: "img", class: "scatter"});
    if (!xs.length) { host.textContent = "no values"; return; }
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min(0, Math.min.apply(null, ys)), y1 = Math.max(0, Math.max.apply(null, ys));
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) y1 = y0 + 1;
    var sx = function (v) { return pad + (v - x0) / (x1 - x0) * (width - 2 * pad); };
    var sy = function (v) { return height - pad - (v - y0) / (y1 - y0) * (height - 2 * pad); };
    svg.appendChild(el("line", {x1: pad, x2: width - pad, y1: sy(0), y2: sy(0), class: "axis"}));
    for (var i = 0; i < xs.length; i++) {
      svg.appendChild(el("circle", {cx: sx(xs[i]), cy: sy(ys[i]), r: 2.5, class: ys[i] > 0 ? "pos" : "neg"}));
    }
    svg.appendChild(el("text", {x: width / 2, y: height - 8, "text-anchor": "middle", class: "label"}, xlabel));
    svg.appendChild(el("text", {x: pad, y: height - pad + 14, class: "tick"}, fmt(x0)));
    svg.appendChild(el("text", {x: width - pad, y: height - pad + 14, "text-anchor": "end", class: "tick"}, fmt(x1)));
    svg.appendChild(el("text", {x: 4, y: sy(y1) + 4, class: "tick"}, "+" + fmt(y1)));
    svg.appendChild(el("text", {x: 4, y: sy(y0), class: "tick"}, fmt(y0)));
    host.appendChild(svg);
  }

  function lines(host, data) {
    var width = Math.max(host.clientWidth || 640, 480), height = 220, left = 56, right = 170, top = 12, bottom = 34;
    var svg = el("svg", {width: width, height: height, role: "img", class: "lines"});
    var values = [];
    data.series.forEach(function (s) { s.y.forEach(function (v) { if (v !== null) values.push(v); }); });
    (data.references || []).forEach(function (r) { values.push(r.value); });
    if (!values.length || !data.x.length) { host.textContent = "no judged answers yet"; return; }
    var y0 = Math.min.apply(null, values), y1 = Math.max.apply(null, values);
    if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
    var padY = (y1 - y0) * 0.08; y0 -= padY; y1 += padY;
    var n = data.x.length, plotW = width - left - right;
    var sx = function (i) { return left + (n === 1 ? plotW / 2 : i / (n - 1) * plotW); };
    var sy = function (v) { return height - bottom - (v - y0) / (y1 - y0) * (height - top - bottom); };
    var show = function (v) { return data.percent ? (100 * v).toFixed(0) + "%" : fmt(v); };
    svg.appendChild(el("line", {x1: left, x2: left + plotW, y1: height - bottom, y2: height - bottom, class: "axis"}));
    svg.appendChild(el("text", {x: left - 6, y: sy(y1) + 4, "text-anchor": "end", class: "tick"}, show(y1)));
    svg.appendChild(el("text", {x: left - 6, y: sy(y0), "text-anchor": "end", class: "tick"}, show(y0)));
    [0, n - 1].forEach(function (i) {
      svg.appendChild(el("text", {x: sx(i), y: height - 12, "text-anchor": i ? "end" : "start", class: "tick"}, data.x[i]));
    });
    (data.references || []).forEach(function (r, k) {
      var g = el("g", {class: "reference", "data-label": r.label, "data-value": r.value});
      g.appendChild(el("line", {x1: left, x2: left + plotW, y1: sy(r.value), y2: sy(r.value), class: "ref"}));
      g.appendChild(el("text", {x: left + 4, y: sy(r.value) - 4 - 12 * k, class: "tick"}, r.label + " " + show(r.value)));
      svg.appendChild(g);
    });
    data.series.forEach(function (s, k) {
      var g = el("g", {class: "series s" + (k % 4), "data-label": s.label});
      var d = "", pen = "M";
      s.y.forEach(function (v, i) {
        if (v === null) { pen = "M"; return; }
        d += pen + sx(i).toFixed(1) + " " + sy(v).toFixed(1) + " "; pen = "L";
        var dot = el("circle", {cx: sx(i), cy: sy(v), r: 3, "data-week": data.x[i], "data-value": v});
        dot.appendChild(el("title", {}, s.label + ", week of " + data.x[i] + ": " + show(v)));
        g.appendChild(dot);
      });
      g.insertBefore(el("path", {d: d}), g.firstChild);
      g.appendChild(el("text", {x: left + plotW + 6, y: top + 14 + 14 * k, class: "label"}, s.label));
      svg.appendChild(g);
    });
    host.appendChild(svg);
  }

  function draw() {
    document.querySelectorAll(".chart[data-chart]").forEach(function (host) {
      var data = JSON.parse(host.getAttribute("data-chart"));
      var kind = host.getAttribute("data-kind");
      if (kind === "scatter") scatter(host, data, host.getAttribute("data-xlabel") || "");
      else if (kind === "lines") lines(host, data);
      else bars(host, data);
      host.setAttribute("data-drawn", "true");
    });
  }

  window.EddyCharts = {bars: bars, scatter: scatter, lines: lines, draw: draw};
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
