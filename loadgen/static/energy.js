// joulebench's Energy tab: charts above the figures Locust renders as a table, and a banner on every tab
// when the run failed. Data: ./joulebench/live (the master's run), polled every 2 s. Charts: uPlot.
(function () {
  "use strict";
  var TAB = "joulebench-energy";
  var POLL_MS = 2000;
  var live = null;
  var charts = {};
  var COLORS = ["#1565c0", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#ad1457", "#4e342e", "#283593"];

  function onEnergyTab() {
    return new URLSearchParams(window.location.search).get("tab") === TAB;
  }

  function ms(v) {
    return v === null || v === undefined ? null : 1000 * v;
  }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text) e.textContent = text;
    return e;
  }

  // The chart definitions: title, y-axis label, and the lines from the run's series.
  function definitions(s) {
    var idle = live.idle_power_w;
    var power = Object.keys(s.power_w || {}).map(function (d) {
      return { label: d === "total" ? "total (W)" : d + " (W)", values: s.power_w[d], width: d === "total" ? 2 : 1.5 };
    });
    if (idle !== null && idle !== undefined) {
      power.push({ label: "loaded idle (W)", values: s.t_s.map(function () { return idle; }), dash: [6, 4], color: "#757575" });
    }
    power.push({ label: "arrivals (req/s)", values: s.scheduled_per_s || [], scale: "rate", color: "#f9a825" });
    return [
      { key: "power", title: "Power per device, loaded idle, arrivals", unit: "W", lines: power, rate: true },
      { key: "rate", title: "Target vs achieved rate (req/s, 10 s mean)", unit: "req/s", lines: [
        { label: "target (scheduled)", values: s.scheduled_per_s || [] },
        { label: "achieved (sent)", values: s.sent_per_s || [] },
        { label: "finished", values: s.finished_per_s || [] } ] },
      { key: "latency", title: "TTFT and TPOT p50 / p99 (ms)", unit: "ms", lines: [
        { label: "TTFT p50", values: (s.ttft_p50_s || []).map(ms) },
        { label: "TTFT p99", values: (s.ttft_p99_s || []).map(ms), dash: [4, 3] },
        { label: "TPOT p50", values: (s.tpot_p50_s || []).map(ms) },
        { label: "TPOT p99", values: (s.tpot_p99_s || []).map(ms), dash: [4, 3] } ] },
      { key: "lag", title: "Schedule lag p50 / p99 (ms)", unit: "ms", lines: [
        { label: "lag p50", values: (s.lag_p50_s || []).map(ms) },
        { label: "lag p99", values: (s.lag_p99_s || []).map(ms), dash: [4, 3] } ] }
    ];
  }

  function makeChart(box, def, width, color) {
    var series = [{}].concat(def.lines.map(function (l, i) {
      return { label: l.label, stroke: l.color || COLORS[i % COLORS.length], width: l.width || 1.5,
               dash: l.dash, scale: l.scale || "y", spanGaps: true, points: { show: false } };
    }));
    var axes = [{ stroke: color, grid: { stroke: "rgba(128,128,128,0.2)" } },
                { stroke: color, label: def.unit, grid: { stroke: "rgba(128,128,128,0.2)" } }];
    var scales = { x: { time: true }, y: { auto: true, range: function (u, lo, hi) { return [0, hi > 0 ? hi * 1.1 : 1]; } } };
    if (def.rate) {
      axes.push({ scale: "rate", side: 1, stroke: color, label: "req/s", grid: { show: false } });
      scales.rate = { auto: true, range: function (u, lo, hi) { return [0, hi > 0 ? hi * 1.1 : 1]; } };
    }
    return new uPlot({ title: def.title, width: width, height: 230, series: series, axes: axes, scales: scales,
                       legend: { live: false } }, [[]].concat(def.lines.map(function () { return []; })), box);
  }

  function mount() {
    var th = Array.prototype.find.call(document.querySelectorAll("th"), function (e) {
      return e.textContent.trim() === "Energy figure";
    });
    if (!th) return null;
    var table = th.closest("table");
    var container = table.parentElement;
    var root = container.querySelector("#jb-cockpit");
    if (!root) {
      root = el("div", { id: "jb-cockpit" });
      root.appendChild(el("p", { id: "jb-status" }));
      root.appendChild(el("p", { id: "jb-note" }));
      root.appendChild(el("div", { id: "jb-charts" }));
      container.insertBefore(root, table);
      charts = {};
    }
    return root;
  }

  function renderCharts(root) {
    var grid = root.querySelector("#jb-charts");
    var s = live.series || { t_s: [] };
    var width = Math.max(360, Math.floor((root.clientWidth || 1200) / 2) - 24);
    var color = window.getComputedStyle(root).color;
    root.dataset.points = String(s.t_s.length);  // how far the charts have got (for a test, or a person)
    definitions(s).forEach(function (def) {
      var shape = def.lines.map(function (l) { return l.label; }).join("|") + "@" + width;
      var c = charts[def.key];
      if (!c || c.shape !== shape) {
        if (c) c.plot.destroy();
        var box = grid.querySelector("[data-chart='" + def.key + "']");
        if (!box) { box = el("div", { "class": "jb-chart", "data-chart": def.key }); grid.appendChild(box); }
        c = charts[def.key] = { shape: shape, plot: makeChart(box, def, width, color) };
      }
      c.plot.setData([s.t_s].concat(def.lines.map(function (l) { return l.values; })));
    });
  }

  function renderTab() {
    if (!live || !onEnergyTab()) return;
    var root = mount();
    if (!root) return;
    var status = root.querySelector("#jb-status");
    var text = live.phase === "idle" ? "No run yet." : "Run " + live.run_id + " — " + live.phase +
      (live.run_dir ? " — run directory: " + live.run_dir : "");
    if (status.textContent !== text) status.textContent = text;
    var note = root.querySelector("#jb-note");
    var noteText = live.note || "";
    if (note.textContent !== noteText) note.textContent = noteText;
    note.style.display = noteText ? "" : "none";
    if (live.phase !== "idle") renderCharts(root);
  }

  function renderBanner() {
    var banner = document.getElementById("jb-banner");
    var message = live && live.error ? "joulebench: " + live.error : "";
    if (!message) { if (banner) banner.remove(); return; }
    if (!banner) {
      banner = el("div", { id: "jb-banner", role: "alert" });
      banner.appendChild(el("span"));
      var close = el("button", { type: "button", "aria-label": "close" }, "×");
      close.addEventListener("click", function () { banner.dataset.closed = message; banner.style.display = "none"; });
      banner.appendChild(close);
      document.body.appendChild(banner);
    }
    banner.firstChild.textContent = message;
    banner.style.display = banner.dataset.closed === message ? "none" : "";
  }

  function poll() {
    fetch("./joulebench/live", { cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { live = data; renderBanner(); renderTab(); } })
      .catch(function () { /* the UI is restarting: the next poll tries again */ })
      .then(function () { window.setTimeout(poll, POLL_MS); });
  }

  var pending = false;
  new MutationObserver(function () {
    if (pending) return;
    pending = true;
    window.requestAnimationFrame(function () { pending = false; renderTab(); });
  }).observe(document.body, { childList: true, subtree: true });
  poll();
})();
