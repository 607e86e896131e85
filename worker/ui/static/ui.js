// smsq dashboard: the little script there is. Confirms before an act; optional refresh.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) {
        event.preventDefault();
      }
    });
  });
  var box = document.getElementById("autorefresh");
  if (box) {
    var key = "smsq-ui-refresh";
    box.checked = window.localStorage.getItem(key) === "1";
    var timer = null;
    var arm = function () {
      if (timer) { window.clearTimeout(timer); timer = null; }
      if (box.checked) { timer = window.setTimeout(function () { window.location.reload(); }, 30000); }
    };
    box.addEventListener("change", function () {
      window.localStorage.setItem(key, box.checked ? "1" : "0");
      arm();
    });
    arm();
  }
});
