// The shop's small scripts: the cart's countdown, the seat map, and a stadium's blocks opened in
// place (the block's seats fetched as a fragment; without the script the link opens the page
// with that block). Pages work without them except the map, whose seats are also reachable
// with the keyboard.
(function () {
  "use strict";

  function countdown(el) {
    var end = Date.parse(el.getAttribute("data-expires"));
    var skew = Date.now() - Date.parse(el.getAttribute("data-now"));
    function tick() {
      var left = Math.max(0, Math.round((end - (Date.now() - skew)) / 1000));
      var m = Math.floor(left / 60), s = left % 60;
      el.textContent = m + ":" + (s < 10 ? "0" : "") + s;
      el.setAttribute("data-seconds-left", String(left));
      if (left === 0) {
        clearInterval(timer);
        var expired = document.getElementById("cart-expired");
        if (expired) { expired.hidden = false; }
        document.querySelectorAll("[data-needs-cart]").forEach(function (b) { b.setAttribute("disabled", ""); });
        setTimeout(function () { window.location.reload(); }, 1500);
      }
    }
    var timer = setInterval(tick, 1000);
    tick();
  }

  function seatMap(svg) {
    var form = document.getElementById(svg.getAttribute("data-form"));
    var list = form.querySelector("[data-selected]");
    var button = form.querySelector("button[type=submit]");
    var max = parseInt(svg.getAttribute("data-max"), 10) || 10;
    function chosen() { return svg.querySelectorAll(".seat[aria-checked=true]"); }
    function sync() {
      form.querySelectorAll("input[name=seat]").forEach(function (i) { i.remove(); });
      var names = [];
      chosen().forEach(function (seat) {
        var input = document.createElement("input");
        input.type = "hidden"; input.name = "seat"; input.value = seat.getAttribute("data-id");
        form.appendChild(input);
        names.push(seat.getAttribute("aria-label"));
      });
      list.textContent = names.join(", ") || "—";
      button.disabled = names.length === 0;
    }
    function toggle(seat) {
      if (seat.getAttribute("data-state") !== "FREE") { return; }
      var on = seat.getAttribute("aria-checked") === "true";
      if (!on && chosen().length >= max) { return; }
      seat.setAttribute("aria-checked", on ? "false" : "true");
      sync();
    }
    svg.addEventListener("click", function (e) {
      var seat = e.target.closest(".seat");
      if (seat) { toggle(seat); }
    });
    svg.addEventListener("keydown", function (e) {
      var seat = e.target.closest(".seat");
      if (seat && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); toggle(seat); }
    });
    sync();
  }

  function openBlock(link) {
    var target = document.getElementById(link.getAttribute("data-target"));
    var request = new XMLHttpRequest();
    request.open("GET", link.getAttribute("data-fragment"));
    request.onload = function () {
      if (request.status !== 200) { window.location.href = link.getAttribute("href"); return; }
      target.innerHTML = request.responseText;
      document.querySelectorAll("[data-fragment][aria-current]").forEach(function (a) {
        a.removeAttribute("aria-current");
      });
      link.setAttribute("aria-current", "true");
      target.querySelectorAll("svg.seatmap").forEach(seatMap);
      if (window.history.replaceState) { window.history.replaceState(null, "", link.getAttribute("href")); }
      var first = target.querySelector(".seat[tabindex]");
      if (first && link === document.activeElement) { first.focus(); }
    };
    request.onerror = function () { window.location.href = link.getAttribute("href"); };
    request.send();
  }

  document.addEventListener("click", function (e) {
    var link = e.target.closest && e.target.closest("a[data-fragment]");
    if (link) { e.preventDefault(); openBlock(link); }
  });
  document.querySelectorAll("[data-expires]").forEach(countdown);
  document.querySelectorAll("svg.seatmap").forEach(seatMap);
})();
