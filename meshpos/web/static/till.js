/* meshpos web till: a little JavaScript on top of server-rendered forms.
 *
 * - Forms marked data-ajax are posted with fetch, one at a time and in order, and the HTML fragment
 *   the server answers replaces the element named by data-target. The scan field is cleared the
 *   moment Enter is pressed, so a keyboard-wedge scanner can send the next code while the previous
 *   one is still on its way; nothing is lost and nothing overtakes.
 * - Server-Sent Events from /events say "the database changed" (db) or "the state banner changed"
 *   (status); elements with data-live / data-live-status re-fetch themselves from that URL.
 * - Keypads type into their form's PIN or keypad field; a beep sounds for a bad or unknown scan.
 * - Drop-down panels (card machine, card, keypad, the state details) open one at a time, focus
 *   their first field, and stay open across a live refresh of the part they belong to.
 * Without JavaScript every form still works as a plain post.
 */
(function () {
  "use strict";

  var chain = Promise.resolve();
  var timings = (window.meshposTimings = []);
  var audio = null;

  function scanField() {
    return document.getElementById("scan");
  }

  function typingElsewhere() {
    var a = document.activeElement;
    if (!a || a === document.body || a.id === "scan") return false;
    return a.matches(
      "input:not([type=hidden]):not([type=radio]):not([type=checkbox]):not([type=submit]), textarea, select"
    );
  }

  function focusScan() {
    var s = scanField();
    if (s && !typingElsewhere()) s.focus();
  }

  function beep(kind) {
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      var tones = kind === "invalid" ? [220, 0, 220] : [440];
      tones.forEach(function (hz, i) {
        if (!hz) return;
        var osc = audio.createOscillator();
        var gain = audio.createGain();
        osc.frequency.value = hz;
        gain.gain.value = 0.08;
        osc.connect(gain).connect(audio.destination);
        var at = audio.currentTime + i * 0.12;
        osc.start(at);
        osc.stop(at + 0.1);
      });
    } catch (e) {
      /* no audio: the notice on screen says it */
    }
  }

  function setLive(ok, text) {
    var dot = document.getElementById("live-state");
    if (!dot) return;
    dot.className = "live-dot " + (ok ? "live-ok" : "live-down");
    dot.title = text;
    dot.setAttribute("data-state", ok ? "ok" : "down");
  }

  function swap(id, html) {
    var el = document.getElementById(id);
    if (!el) return;
    el.innerHTML = html;
    var noisy = el.querySelector("[data-beep]");
    if (noisy) beep(noisy.getAttribute("data-beep"));
    focusScan();
  }

  function showError(text) {
    var n = document.getElementById("notice");
    if (!n) {
      window.alert(text);
      return;
    }
    n.className = "notice n-error";
    n.setAttribute("data-level", "error");
    n.textContent = text;
    beep("invalid");
  }

  function post(form, data) {
    var target = form.getAttribute("data-target") || "till-main";
    var action = form.getAttribute("action");
    var started = performance.now();
    return fetch(action, {
      method: "POST",
      body: new URLSearchParams(data),
      headers: { "X-Fragment": "1" },
      credentials: "same-origin",
    })
      .then(function (r) {
        if (r.status === 401) {
          window.location.href = "/signin";
          return null;
        }
        if (!r.ok) {
          return r.text().then(function (text) {
            showError("the till service refused that (" + r.status + "): " + text.slice(0, 200));
            return null;
          });
        }
        return r.text();
      })
      .then(function (html) {
        if (html === null) return;
        swap(target, html);
        var ms = performance.now() - started;
        timings.push({ action: action, ms: ms });
        if (timings.length > 500) timings.shift();
        document.dispatchEvent(
          new CustomEvent("meshpos:swapped", { detail: { action: action, ms: ms } })
        );
      })
      .catch(function (err) {
        setLive(false, "the till service did not answer: " + err);
        showError("the till service did not answer; check that it is running, then try again");
      });
  }

  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-ajax")) return;
    e.preventDefault();
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) return;
    var data = new FormData(form, e.submitter || null);
    if (form.id === "scan-form") {
      var s = scanField();
      if (!s.value.trim()) return;
      s.value = "";
      s.focus();
    }
    chain = chain.then(function () {
      return post(form, data);
    });
  });

  /* Keypads: buttons with data-key type into the form's PIN field. */
  document.addEventListener("click", function (e) {
    var key = e.target.closest && e.target.closest("[data-key]");
    if (!key) return;
    var form = key.closest("form");
    var input = form && form.querySelector("input.pin");
    if (!input) return;
    e.preventDefault();
    var k = key.getAttribute("data-key");
    if (k === "back") input.value = input.value.slice(0, -1);
    else if (k === "." && input.value.indexOf(".") >= 0) return;
    else if (k === "clear") input.value = "";
    else input.value += k;
    input.focus();
  });

  /* One drop-down open at a time; an opened one focuses its first field. */
  document.addEventListener(
    "toggle",
    function (e) {
      var d = e.target;
      if (!(d instanceof HTMLDetailsElement)) return;
      var field = d.open && d.classList.contains("drop") && d.querySelector("input:not([type=hidden])");
      if (d.open) {
        document.querySelectorAll("details[open]").forEach(function (other) {
          if (other !== d && !other.contains(d)) other.open = false;
        });
      }
      /* a scanner's next keystrokes go to the scan field unless a drop-down wants typing */
      if (field) field.focus();
      else window.setTimeout(focusScan, 0);
    },
    true
  );

  /* Tapping anywhere that is not a field sends focus back to the scan field. */
  document.addEventListener("click", function (e) {
    var inState = e.target.closest && e.target.closest("details.state");
    if (!inState && e.target.closest && e.target.closest("input, textarea, select, label, summary, details"))
      return;
    window.setTimeout(focusScan, 0); /* the state chip never keeps the scanner's keystrokes */
  });

  /* Live parts: re-fetch on events; never under the cashier's fingers (wait for focus to leave). */
  var busy = new Map();

  function refresh(el) {
    var url = el.getAttribute("data-live") || el.getAttribute("data-live-status");
    if (!url) return;
    if (el.contains(document.activeElement) && typingElsewhere()) {
      el.setAttribute("data-stale", "1");
      return;
    }
    if (busy.get(el)) {
      busy.set(el, "again");
      return;
    }
    busy.set(el, true);
    fetch(url, { credentials: "same-origin", headers: { "X-Fragment": "1" } })
      .then(function (r) {
        if (r.status === 401) {
          window.location.href = "/signin";
          return null;
        }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html !== null) {
          var open = Array.prototype.map.call(el.querySelectorAll("details[open][id]"), function (d) {
            return d.id;
          });
          el.innerHTML = html;
          open.forEach(function (id) {
            var d = document.getElementById(id);
            if (d) d.open = true;
          });
          el.removeAttribute("data-stale");
          el.setAttribute("data-refreshed", String(Date.now()));
          document.dispatchEvent(new CustomEvent("meshpos:refreshed", { detail: { url: url } }));
        }
      })
      .catch(function () {})
      .then(function () {
        var again = busy.get(el) === "again";
        busy.delete(el);
        if (again) refresh(el);
      });
  }

  function refreshAll(selector) {
    document.querySelectorAll(selector).forEach(refresh);
  }

  document.addEventListener("focusout", function () {
    window.setTimeout(function () {
      refreshAll("[data-stale]");
    }, 0);
  });

  var lost = false;

  function connect() {
    if (!window.EventSource) return;
    var es = new EventSource("/events");
    es.addEventListener("hello", function () {
      setLive(true, "live updates on");
      if (lost) refreshAll("[data-live], [data-live-status]");
      lost = false;
    });
    es.addEventListener("db", function () {
      refreshAll("[data-live]");
    });
    es.addEventListener("status", function () {
      refreshAll("[data-live-status]");
    });
    es.onerror = function () {
      lost = true;
      setLive(false, "live updates lost: the till service is not answering (retrying)");
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    connect();
    focusScan();
    /* The banner's "for N min" ages even when nothing changes. */
    window.setInterval(function () {
      refreshAll("[data-live-status]");
    }, 30000);
  });
})();
