// The Live page: each runner panel is re-rendered by the observatory and swapped in on a timer.
(function () {
  "use strict";
  document.querySelectorAll("section.runner").forEach(function (section) {
    var url = section.getAttribute("data-panel");
    var every = parseInt(section.getAttribute("data-poll-ms"), 10) || 2000;
    var busy = false;
    function poll() {
      if (busy) return;
      busy = true;
      fetch(url, {cache: "no-store"})
        .then(function (r) { return r.ok ? r.text() : Promise.reject(new Error("HTTP " + r.status)); })
        .then(function (html) { section.innerHTML = html; section.setAttribute("data-updated", String(Date.now())); })
        .catch(function (e) {
          var p = section.querySelector("p.poll-error") || document.createElement("p");
          p.className = "warn poll-error";
          p.textContent = "observatory unreachable: " + e.message;
          section.appendChild(p);
        })
        .then(function () { busy = false; });
    }
    poll();
    setInterval(poll, every);
  });
})();
