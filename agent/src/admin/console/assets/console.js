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
    var all = 0;
    Object.keys(data.counts).forEach(function (state) {
      all += data.counts[state];
      text(document.querySelector('#counts [data-count="' + state + '"]'), String(data.counts[state]));
    });
    text(document.querySelector('#counts [data-count="all"]'), String(all));
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

// Incidents, silences, notifications (console-b): confirm dialogs and live previews.
(function () {
  // Forms that change something for good ask first.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (e) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { e.preventDefault(); }
    });
  });
  if (!window.fetch) { return; }
  function debounce(fn, ms) {
    var t = null;
    return function () { if (t) { window.clearTimeout(t); } t = window.setTimeout(fn, ms); };
  }
  function clear(el) { while (el.firstChild) { el.removeChild(el.firstChild); } }
  function para(cls, text) {
    var p = document.createElement("p");
    p.className = cls;
    p.textContent = text;
    return p;
  }
  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) {
        if (r.redirected) { window.location.reload(); return null; }
        return r.json().then(function (body) { return { ok: r.ok, body: body }; });
      });
  }

  // Incident: the update as the status page will show it, while it is typed.
  var message = document.querySelector("textarea[data-preview]");
  var updateBox = document.getElementById("update-preview");
  if (message && updateBox) {
    var seq = 0;
    var refresh = debounce(function () {
      var mine = ++seq;
      if (!message.value.trim()) {
        clear(updateBox);
        updateBox.appendChild(para("hint", "Type a message to see it here."));
        return;
      }
      getJSON(message.getAttribute("data-preview") + "?message=" + encodeURIComponent(message.value))
        .then(function (res) {
          if (!res || mine !== seq) { return; }
          clear(updateBox);
          if (res.body && typeof res.body.html === "string") {
            // Rendered by the server from the theme's markup, every value escaped.
            var tpl = document.createElement("template");
            tpl.innerHTML = res.body.html;
            updateBox.appendChild(tpl.content);
          } else {
            updateBox.appendChild(para("error", (res.body && res.body.error) || "No preview."));
          }
        })
        .catch(function () { /* offline: the Preview button still works */ });
    }, 300);
    message.addEventListener("input", refresh);
  }

  // Silence: which monitors it would match, while the form is filled in.
  var silenceForm = document.getElementById("silence-form");
  var silenceBox = document.getElementById("silence-preview");
  if (silenceForm && silenceBox) {
    var sseq = 0;
    var show = debounce(function () {
      var mine = ++sseq;
      var q = ["namespace", "monitor", "labels"].map(function (name) {
        var el = silenceForm.elements[name];
        return name + "=" + encodeURIComponent(el ? el.value : "");
      }).join("&");
      getJSON(silenceForm.getAttribute("data-preview") + "?" + q)
        .then(function (res) {
          if (!res || mine !== sseq) { return; }
          clear(silenceBox);
          if (!res.ok || !Array.isArray(res.body)) {
            var msg = res.body && res.body.error && res.body.error.message;
            silenceBox.appendChild(para("error", msg || "No preview."));
            return;
          }
          var n = res.body.length;
          silenceBox.appendChild(para("preview-count", n + " monitor" + (n === 1 ? "" : "s") + (n > 200 ? " (the first 200 listed)" : "") + "."));
          if (n) {
            var ul = document.createElement("ul");
            ul.className = "matched";
            res.body.slice(0, 200).forEach(function (key) {
              var li = document.createElement("li");
              li.textContent = key;
              ul.appendChild(li);
            });
            silenceBox.appendChild(ul);
          }
        })
        .catch(function () { /* offline: the Preview matches button still works */ });
    }, 250);
    ["namespace", "monitor", "labels"].forEach(function (name) {
      var el = silenceForm.elements[name];
      if (el) { el.addEventListener("input", show); el.addEventListener("change", show); }
    });
    show();
  }
})();
