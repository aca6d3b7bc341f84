// KubeKuma default theme: progressive enhancement only. Without scripts the page shows
// everything but the staleness notice and relative times.
(function () {
  "use strict";
  var body = document.body;
  var generated = Date.parse(body.getAttribute("data-generated"));
  var staleAfter = Number(body.getAttribute("data-stale-after")) * 1000;
  function ago(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + (s === 1 ? " second ago" : " seconds ago");
    var m = Math.round(s / 60);
    if (m < 60) return m + (m === 1 ? " minute ago" : " minutes ago");
    var h = Math.round(m / 60);
    if (h < 48) return h + (h === 1 ? " hour ago" : " hours ago");
    return Math.round(h / 24) + " days ago";
  }
  function refresh() {
    var now = Date.now();
    if (!isNaN(generated) && staleAfter > 0 && now - generated > staleAfter) {
      document.getElementById("stale").hidden = false;
    }
    var times = document.querySelectorAll("time.rel");
    for (var i = 0; i < times.length; i++) {
      var t = Date.parse(times[i].getAttribute("datetime"));
      if (!isNaN(t)) {
        times[i].title = times[i].getAttribute("datetime");
        times[i].textContent = ago(now - t);
      }
    }
  }
  refresh();
  setInterval(refresh, 30000);
})();
