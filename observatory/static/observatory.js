// Sortable and filterable tables, and the Runs page's compare selection. No libraries.
(function () {
  "use strict";
  function cellValue(row, i) {
    var td = row.cells[i];
    if (!td) return "";
    return td.hasAttribute("data-v") ? td.getAttribute("data-v") : td.textContent.trim();
  }
  // th data-kind int|pct|num|share: numeric cells (data-v holds the plain number); anything else sorts as text
  function sortBy(table, th) {
    var i = th.cellIndex, body = table.tBodies[0];
    if (!body) return;
    var numeric = /^(int|pct|num|share)$/.test(th.getAttribute("data-kind") || "");
    var asc = !th.classList.contains("asc");
    Array.prototype.forEach.call(th.parentNode.cells, function (c) { c.classList.remove("asc", "desc"); });
    th.classList.add(asc ? "asc" : "desc");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      var a = cellValue(r1, i), b = cellValue(r2, i);
      if (a === "" || b === "") return a === b ? 0 : a === "" ? 1 : -1;  // missing values last
      var c = numeric ? parseFloat(a) - parseFloat(b) : a.localeCompare(b);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    if (!table.tHead) return;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      if (th.classList.contains("nosort")) return;
      th.addEventListener("click", function () { sortBy(table, th); });
    });
  });
  var filter = document.getElementById("filter");
  if (filter) {
    var table = document.getElementById(filter.getAttribute("data-table"));
    var shown = document.getElementById("shown");
    var apply = function () {
      var words = filter.value.toLowerCase().split(/\s+/).filter(Boolean), n = 0, total = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
        var text = r.textContent.toLowerCase();
        var ok = words.every(function (w) { return text.indexOf(w) >= 0; });
        r.style.display = ok ? "" : "none";
        total += 1;
        if (ok) n += 1;
      });
      if (shown) shown.textContent = n + " of " + total + " shown";
    };
    filter.addEventListener("input", apply);
    apply();
  }
  var button = document.getElementById("compare");
  if (button) {
    var picks = function () {
      return Array.prototype.filter.call(document.querySelectorAll("input.pick"), function (c) { return c.checked; });
    };
    document.addEventListener("change", function (e) {
      if (e.target.classList && e.target.classList.contains("pick")) {
        var n = picks().length;
        button.disabled = n === 0;
        button.textContent = n ? "Compare selected (" + n + ")" : "Compare selected";
      }
    });
    button.addEventListener("click", function () {
      var q = picks().map(function (c) { return "run=" + encodeURIComponent(c.value); }).join("&");
      if (q) window.location.href = "/runs/compare?" + q;
    });
  }
  // plotly figures given as JSON specs beside their divs (sweep pages)
  if (window.Plotly) {
    document.querySelectorAll("div.fig").forEach(function (div) {
      var data = document.getElementById(div.id + "-data");
      if (!data) return;
      var spec = JSON.parse(data.textContent);
      window.Plotly.newPlot(div, spec.data, spec.layout, {displaylogo: false, responsive: true});
    });
  }
})();
