// KubeKuma admin console: progressive enhancement only; every page works without it.
"use strict";
(function () {
  // Overview: poll the same page as JSON every 5 s and update rows in place.
  var table = document.getElementById("monitors");
  if (!table || !window.fetch) { return; }
  var url = table.getAttribute("data-json");
  var SVG = "http://www.w3.org/2000/svg";
  function text(el, value) { if (el && el.textContent !== value) { el.textContent = value; } }
  function percent(v) { return v === null || v === undefined ? "\u2013" : v + " %"; }
  function ago(iso) {
    if (!iso) { return null; }
    var s = Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 1000));
    if (s < 60) { return s + " s ago"; }
    if (s < 3600) { return Math.floor(s / 60) + " min ago"; }
    if (s < 86400) { return Math.floor(s / 3600) + " h ago"; }
    return Math.floor(s / 86400) + " d ago";
  }
  function spark(cell, row) {
    var points = row.sparkPoints || "";
    var svg = cell.querySelector("svg");
    if (!points) { if (svg) { cell.removeChild(svg); } return; }
    if (!svg) {
      svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("viewBox", "-1 0 102 24");
      svg.setAttribute("width", "100");
      svg.setAttribute("height", "24");
      svg.setAttribute("role", "img");
      svg.appendChild(document.createElementNS(SVG, "polyline"));
      cell.appendChild(svg);
    }
    svg.setAttribute("aria-label", "Latency of the last " + row.sparkline.length + " checks");
    var line = svg.querySelector("polyline");
    if (line.getAttribute("points") !== points) { line.setAttribute("points", points); }
  }
  function update(data) {
    var seen = {};
    var changed = false;
    data.rows.forEach(function (row) {
      seen[row.key] = true;
      var tr = table.querySelector('tr[data-monitor="' + (window.CSS && CSS.escape ? CSS.escape(row.key) : row.key) + '"]');
      if (!tr) { changed = true; return; }
      if (tr.getAttribute("data-state") !== row.state) { tr.setAttribute("data-state", row.state); }
      var badge = tr.querySelector(".state .badge");
      if (badge) { badge.className = "badge s-" + row.state; text(badge, row.state); }
      text(tr.querySelector(".reason"), row.reason || "");
      var last = tr.querySelector(".last");
      if (last) {
        var t = last.querySelector("time");
        if (row.lastCheck) {
          if (!t) { last.textContent = ""; t = document.createElement("time"); last.appendChild(t); }
          if (t.getAttribute("datetime") !== row.lastCheck) { t.setAttribute("datetime", row.lastCheck); }
          text(t, ago(row.lastCheck));
        } else { text(last, "never"); }
      }
      text(tr.querySelector(".up24"), percent(row.uptime24h));
      text(tr.querySelector(".up30"), percent(row.uptime30d));
      var cell = tr.querySelector(".spark");
      if (cell) { spark(cell, row); }
    });
    table.querySelectorAll("tr[data-monitor]").forEach(function (tr) {
      if (!seen[tr.getAttribute("data-monitor")]) { changed = true; }
    });
    Object.keys(data.counts).forEach(function (state) {
      text(document.querySelector('#counts [data-count="' + state + '"]'), String(data.counts[state]));
    });
    var note = document.getElementById("live-note");
    if (note) {
      if (changed) {
        note.hidden = false;
        text(note, "The list of monitors changed. Reload the page to see it.");
      } else if (!note.hidden) { note.hidden = true; }
    }
  }
  var busy = false;
  function poll() {
    if (busy || document.hidden) { return; }
    busy = true;
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) {
        if (r.redirected || r.status === 401 || r.status === 303) { window.location.reload(); return null; }
        return r.ok ? r.json() : null;
      })
      .then(function (data) { if (data && data.rows) { update(data); } })
      .catch(function () { /* offline for a moment: the next poll tries again */ })
      .then(function () { busy = false; });
  }
  window.setInterval(poll, 5000);
})();
