// The portal's only script: the kiosk's card polling, the idle sign-out, and nothing kept in
// the browser's back/forward cache. Pages work without it (the server expires sessions and
// the kiosk's start screen reloads itself), so it only makes the screen respond sooner.
(function () {
  "use strict";
  var body = document.body;
  var mode = body.getAttribute("data-mode");
  var signedIn = body.getAttribute("data-signed-in") === "true";
  var idleSeconds = parseInt(body.getAttribute("data-idle-seconds"), 10) || 60;
  var pollMs = parseInt(body.getAttribute("data-poll-ms"), 10) || 1000;

  // a page restored from the back/forward cache could show the previous person: load afresh
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) { window.location.reload(); }
  });

  function getJson(url, done) {
    var request = new XMLHttpRequest();
    request.open("GET", url);
    request.setRequestHeader("Accept", "application/json");
    request.onload = function () {
      if (request.status === 200) {
        try { done(JSON.parse(request.responseText)); } catch (e) { /* try again next tick */ }
      }
    };
    request.send();
  }

  var follow = document.querySelector("[data-autofollow]");
  if (follow) { window.location.replace(follow.getAttribute("href")); return; }

  var start = document.getElementById("kiosk-start");
  if (start) {
    var refusedShown = document.getElementById("card-refused") !== null;
    var status = document.getElementById("kiosk-status");
    var poll = function () {
      getJson("/kiosk/poll", function (answer) {
        if (answer.state === "signed_in") {
          if (status) { status.textContent = "正在读取… Reading…"; }
          window.location.replace(answer.next || "/me");
          return;
        }
        if ((answer.state === "refused") !== refusedShown) {
          window.location.replace("/");
          return;
        }
        window.setTimeout(poll, pollMs);
      });
    };
    window.setTimeout(poll, pollMs);
    return;
  }

  if (!signedIn) { return; }

  function signOut() {
    var form = document.getElementById("signout-form");
    if (form) { form.submit(); } else { window.location.replace("/"); }
  }

  var timer = null;
  function resetIdle() {
    if (timer !== null) { window.clearTimeout(timer); }
    timer = window.setTimeout(signOut, idleSeconds * 1000);
  }
  ["keydown", "pointerdown", "touchstart", "wheel"].forEach(function (name) {
    window.addEventListener(name, resetIdle, { passive: true });
  });
  resetIdle();

  if (mode === "kiosk") {
    // the card taken away, or the server's idle time-out: back to the start screen
    var watch = function () {
      getJson("/kiosk/status", function (answer) {
        if (!answer.signed_in) { window.location.replace("/"); return; }
        window.setTimeout(watch, 2000);
      });
    };
    window.setTimeout(watch, 2000);
  }
})();
