// Module table: click a header to sort, filter by role, name and "changed only". No dependencies.
(function () {
  "use strict";
  var table = document.getElementById("module-table");
  if (!table) { return; }
  var body = table.tBodies[0];
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var rows = Array.prototype.slice.call(body.rows);
  var role = document.getElementById("role-filter");
  var name = document.getElementById("name-filter");
  var changed = document.getElementById("changed-only");
  var count = document.getElementById("row-count");

  function key(row, col, numeric) {
    var cell = row.cells[col];
    if (!numeric) { return cell.textContent; }
    var v = cell.getAttribute("data-v");
    return v === null || v === "" ? null : parseFloat(v);
  }

  function sortBy(col) {
    var th = heads[col];
    var numeric = th.getAttribute("data-type") === "num";
    var dir = th.getAttribute("aria-sort") === "descending" ? 1 : -1;
    if (!th.hasAttribute("aria-sort") && !numeric) { dir = 1; }
    heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    rows.sort(function (a, b) {
      var x = key(a, col, numeric), y = key(b, col, numeric);
      if (x === y) { return 0; }
      if (x === null) { return 1; }  // missing values last in either direction
      if (y === null) { return -1; }
      if (numeric) { return (x - y) * dir; }
      return x.localeCompare(y, undefined, { numeric: true }) * dir;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }

  function filter() {
    var r = role.value, n = name.value.trim().toLowerCase(), c = changed.checked, shown = 0;
    rows.forEach(function (row) {
      var ok = (!r || row.getAttribute("data-role") === r) &&
               (!n || row.cells[0].textContent.toLowerCase().indexOf(n) !== -1) &&
               (!c || !row.classList.contains("identical"));
      row.hidden = !ok;
      if (ok) { shown += 1; }
    });
    count.textContent = shown === rows.length ? rows.length + " modules" : shown + " of " + rows.length + " modules";
  }

  heads.forEach(function (th, i) {
    th.tabIndex = 0;
    th.addEventListener("click", function () { sortBy(i); });
    th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(i); } });
  });
  role.addEventListener("change", filter);
  name.addEventListener("input", filter);
  changed.addEventListener("change", filter);
})();
