// uringnotes page script. The page works without it (a plain form post and
// a redirect); with it, notes are added without a reload and notes added
// anywhere appear live through Server-Sent Events (GET /events).
//
// Note text is only ever put into the page with textContent: it is never
// parsed as markup, whatever it contains.
"use strict";

(function () {
  var list = document.getElementById("notes");
  var form = document.querySelector("form[action=\"/notes\"]");
  var live = document.getElementById("live");
  var status = document.getElementById("status");
  if (!list) return;

  function localTime(el) {
    var d = new Date(el.getAttribute("datetime"));
    if (!isNaN(d)) {
      el.title = el.getAttribute("datetime");
      el.textContent = d.toLocaleString();
    }
  }
  Array.prototype.forEach.call(list.querySelectorAll("time"), localTime);

  // Node names by id, from the footer (this node and its cluster peers).
  var names = Object.create(null);
  Array.prototype.forEach.call(document.querySelectorAll("footer [data-node]"), function (el) {
    names[el.getAttribute("data-node")] = el.textContent;
  });

  // Adds a note (the JSON of the API) at the top, unless it is shown already.
  function show(note) {
    if (typeof note.id !== "string" || document.getElementById("n-" + note.id)) return;
    var li = document.createElement("li");
    li.id = "n-" + note.id;
    li.className = "new";
    var p = document.createElement("p");
    p.textContent = note.text;
    var small = document.createElement("small");
    var time = document.createElement("time");
    time.setAttribute("datetime", note.created_at);
    time.textContent = note.created_at;
    localTime(time);
    small.appendChild(time);
    small.appendChild(document.createTextNode(" \u00b7 node " + (names[note.node] || note.node)));
    li.appendChild(p);
    li.appendChild(small);
    list.insertBefore(li, list.firstChild);
    var empty = document.getElementById("empty");
    if (empty) empty.remove();
    var count = document.getElementById("count");
    if (count) {
      var n = parseInt(count.getAttribute("data-n"), 10) + 1;
      count.setAttribute("data-n", n);
      count.textContent = n + (n === 1 ? " note" : " notes");
    }
  }

  function say(text, bad) {
    if (!status) return;
    status.textContent = text;
    status.className = bad ? "bad" : "";
  }

  if (form && window.fetch) {
    var text = form.querySelector("textarea");
    var button = form.querySelector("button");
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      button.disabled = true;
      say("Saving\u2026", false);
      fetch(form.action, {
        method: "POST",
        headers: {
          "Content-Type": "application/x-www-form-urlencoded",
          "Accept": "application/json"
        },
        body: new URLSearchParams(new FormData(form)).toString()
      }).then(function (res) {
        if (res.status === 201) {
          return res.json().then(function (note) {
            show(note);
            text.value = "";
            say("Added.", false);
          });
        }
        return res.text().then(function (msg) {
          say(msg.trim() || "The note was not added (" + res.status + ").", true);
        });
      }).catch(function () {
        say("The server could not be reached; the note was not added.", true);
      }).then(function () {
        button.disabled = false;
        text.focus();
      });
    });
    text.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) form.requestSubmit();
    });
  }

  // Live updates, only on the newest page (the server marks it).
  var since = list.getAttribute("data-since");
  if (since !== null && window.EventSource) {
    var es = new EventSource("/events?since_us=" + encodeURIComponent(since));
    var state = function (s, label) {
      document.documentElement.setAttribute("data-live", s);
      if (live) {
        live.hidden = false;
        live.setAttribute("data-state", s);
        live.textContent = label;
      }
    };
    state("connecting", "connecting");
    es.onopen = function () { state("open", "live"); };
    es.onerror = function () { state("reconnecting", "reconnecting"); };
    es.addEventListener("note", function (ev) {
      var note;
      try { note = JSON.parse(ev.data); } catch (e) { return; }
      show(note);
    });
    // The server could not keep this page complete: load it afresh.
    es.addEventListener("reload", function () {
      es.close();
      location.reload();
    });
  }
})();
