// The signal monitor's page: traces come as JSON over a websocket (or
// server-sent events), and are shown as text only: every value goes through
// textContent, never through HTML.
(function () {
  "use strict";
  var top = document.getElementById("top");
  var tbody = document.querySelector("#requests tbody");
  var status = document.getElementById("live-status");
  var notice = document.getElementById("notice");
  var empty = document.getElementById("empty");
  var leftOutNote = document.getElementById("left-out");
  var leftOut = 0; // requests that came too fast to be sent to the page
  var search = document.getElementById("search");
  var showEmpty = document.getElementById("show-empty");
  var pauseButton = document.getElementById("pause");
  var clearButton = document.getElementById("clear");
  var detail = document.getElementById("detail");
  var detailTitle = document.getElementById("detail-title");
  var detailMeta = document.getElementById("detail-meta");
  var detailError = document.getElementById("detail-error");
  var waterfall = document.getElementById("waterfall");
  var capacity = Number(top.dataset.capacity) || 200;
  document.getElementById("needs-script").hidden = true;

  var traces = new Map(); // id -> trace
  var cleared = new Set(); // ids cleared by the user
  var clearedBefore = new Map(); // by worker: its traces that started before were cleared
  var selected = null; // the id of the trace shown in the waterfall
  var openArgs = new Set(); // "traceId/n" of sends whose arguments are open
  var paused = false;
  var waiting = null; // while paused: what came meanwhile (see hold)
  var ended = false;
  var connected = false; // whether the live connection is up
  var renderQueued = false;

  // Building the page: text only.

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function pad(n, width) { return String(n).padStart(width, "0"); }

  function clock(seconds) {
    var d = new Date(seconds * 1000);
    return pad(d.getHours(), 2) + ":" + pad(d.getMinutes(), 2) + ":" +
      pad(d.getSeconds(), 2) + "." + pad(d.getMilliseconds(), 3);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) { return ""; }
    if (seconds < 0) { seconds = 0; }
    if (seconds < 1e-3) { return Math.round(seconds * 1e6) + " µs"; }
    if (seconds < 1) { return (seconds * 1e3).toFixed(1) + " ms"; }
    return seconds.toFixed(2) + " s";
  }

  function workerLabel(worker) {
    var parts = String(worker).split(":");
    return parts.length > 2 ? parts.slice(0, 2).join(":") : String(worker);
  }

  function normal(text) { return String(text).toLowerCase().replace(/_/g, "-"); }

  function hasReceivers(send) { return send.receivers && send.receivers.length > 0; }

  // A status as a class name: only those the style sheet knows.
  var STATUSES = ["running", "done", "failed", "cancelled", "not called"];
  function statusClass(status) {
    return STATUSES.indexOf(status) === -1 ? "other" : status.replace(" ", "-");
  }

  // Traces from other processes, linked to the send that published them.
  function linkKey(worker, number) { return worker + "#" + number; }

  function linkedTo(trace) {
    var from = trace.from;
    if (!from) { return null; }
    return linkIndex.get(linkKey(from[0], from[1])) || null;
  }

  var linkIndex = new Map(); // "worker#published" -> trace id
  function indexLinks() {
    linkIndex.clear();
    traces.forEach(function (trace) {
      trace.sends.forEach(function (send) {
        if (send.published !== null && send.published !== undefined) {
          linkIndex.set(linkKey(trace.worker, send.published), trace.id);
        }
      });
    });
  }

  function childrenOf(trace) {
    var found = [];
    traces.forEach(function (other) {
      var from = other.from;
      if (!from || from[0] !== trace.worker) { return; }
      trace.sends.forEach(function (send) {
        if (send.published === from[1]) { found.push({ trace: other, after: send.n }); }
      });
    });
    return found;
  }

  function label(trace) {
    if (trace.kind === "http" || trace.kind === "websocket") {
      return { method: trace.method || "", text: trace.path || "" };
    }
    var first = trace.sends.length ? trace.sends[0].signal : "";
    if (trace.kind === "lifespan") { return { method: "", text: "lifespan" }; }
    if (trace.kind === "bridged") {
      return { method: "", text: first, sub: "from " + workerLabel(trace.from[0]) };
    }
    if (trace.kind === "background") { return { method: "", text: first, sub: "background" }; }
    return { method: "", text: first, sub: "outside a request" };
  }

  function statusText(trace) {
    if (trace.status !== null && trace.status !== undefined) { return String(trace.status); }
    if (trace.error) { return "error"; }
    if (trace.end === null || trace.end === undefined) { return "…"; }
    if (trace.kind === "websocket") { return "closed"; }
    return trace.failed ? "failed" : "";
  }

  function traceEnd(trace) {
    var end = trace.end || trace.start;
    trace.sends.forEach(function (send) {
      if (send.end && send.end > end) { end = send.end; }
      send.receivers.forEach(function (run) {
        if (run.end && run.end > end) { end = run.end; }
      });
    });
    return end;
  }

  function counted(trace) {
    var withReceivers = 0;
    trace.sends.forEach(function (send) { if (hasReceivers(send)) { withReceivers += 1; } });
    return withReceivers;
  }

  function matches(trace, needle) {
    if (!needle) { return true; }
    var fields = [trace.method, trace.path, statusText(trace), trace.kind, trace.error,
      workerLabel(trace.worker)];
    if (fields.some(function (f) { return f && normal(f).indexOf(needle) !== -1; })) {
      return true;
    }
    return trace.sends.some(function (send) { return normal(send.signal).indexOf(needle) !== -1; });
  }

  function wasCleared(trace) {
    var before = clearedBefore.get(trace.worker);
    return cleared.has(trace.id) || (before !== undefined && trace.start <= before);
  }

  function listed(trace) {
    if (wasCleared(trace)) { return false; }
    if (linkedTo(trace)) { return false; } // shown in the trace that published it
    if (trace.kind === "http" || trace.kind === "websocket") { return true; }
    return showEmpty.checked || trace.failed || counted(trace) > 0;
  }

  function renderList() {
    var needle = normal(search.value.trim());
    var shown = [];
    traces.forEach(function (trace) {
      if (listed(trace) && matches(trace, needle)) { shown.push(trace); }
    });
    shown.sort(function (a, b) { return b.start - a.start; });
    var rows = document.createDocumentFragment();
    shown.forEach(function (trace) {
      var row = el("tr");
      row.dataset.id = trace.id;
      row.tabIndex = 0;
      if (trace.failed) { row.classList.add("failed"); }
      if (trace.id === selected) { row.classList.add("selected"); }
      row.appendChild(el("td", "time", clock(trace.start)));
      var what = el("td", "what");
      var name = label(trace);
      if (name.method) { what.appendChild(el("span", "method", name.method)); }
      what.appendChild(el("span", "path", name.text));
      if (name.sub) { what.appendChild(el("span", "sub", name.sub)); }
      row.appendChild(what);
      row.appendChild(el("td", "status", statusText(trace)));
      var done = trace.end !== null && trace.end !== undefined;
      row.appendChild(el("td", "duration", done ? duration(trace.end - trace.start) : "running"));
      var total = trace.sends.length + (trace.more || 0);
      row.appendChild(el("td", "count", counted(trace) + " of " + total));
      row.appendChild(el("td", "worker", workerLabel(trace.worker)));
      rows.appendChild(row);
    });
    tbody.replaceChildren(rows);
    empty.hidden = shown.length > 0;
    if (!shown.length && traces.size) {
      empty.textContent = "No request matches.";
    } else if (!shown.length) {
      empty.textContent = "Recording since this page opened: requests to the app show here as they are made.";
    }
  }

  // The waterfall of one trace.

  function bar(className, start, end, t0, span) {
    var node = el("div", "bar " + className);
    var left = Math.max(0, (start - t0) / span * 100);
    var width = Math.max(0, ((end === null ? t0 + span : end) - start) / span * 100);
    node.style.left = Math.min(left, 100) + "%";
    node.style.width = Math.min(width, 100 - Math.min(left, 100)) + "%";
    return node;
  }

  function argsBlock(trace, send) {
    var key = trace.id + "/" + send.n;
    var block = el("details", "args");
    block.open = openArgs.has(key);
    block.addEventListener("toggle", function () {
      if (block.open) { openArgs.add(key); } else { openArgs.delete(key); }
    });
    block.appendChild(el("summary", null, "arguments (" + send.args.length + ")"));
    var list = el("dl");
    send.args.forEach(function (pair) {
      list.appendChild(el("dt", "mono", pair[0]));
      list.appendChild(el("dd", "mono", pair[1]));
    });
    block.appendChild(list);
    return block;
  }

  function sendRows(trace, send, depth, t0, span, into) {
    var failed = send.status === "failed" ||
      send.receivers.some(function (r) { return r.status === "failed"; });
    var row = el("div", "row send depth-" + Math.min(depth, 2) + (failed ? " failed" : ""));
    row.setAttribute("role", "row");
    var info = el("div", "label");
    info.appendChild(el("span", "signal", send.signal));
    var count = send.receivers.length + (send.more_receivers || 0);
    var meta = send.sender + " · " + send.mode + " · " +
      (count === 1 ? "1 receiver" : count + " receivers");
    if (send.status === "cancelled") { meta += " · cancelled"; }
    info.appendChild(el("div", "meta", meta));
    if (send.error) {
      info.appendChild(el("div", send.status === "failed" ? "error-text" : "meta", send.error));
    }
    if (send.args.length) { info.appendChild(argsBlock(trace, send)); }
    row.appendChild(info);
    var track = el("div", "track");
    track.appendChild(bar("send", send.start, send.end, t0, span));
    row.appendChild(track);
    into.appendChild(row);
    send.receivers.forEach(function (run) {
      var line = el("div", "row receiver depth-" + Math.min(depth, 2) + (run.status === "failed" ? " failed" : ""));
      line.setAttribute("role", "row");
      var who = el("div", "label");
      who.appendChild(el("span", "name", run.name));
      who.appendChild(document.createTextNode(" "));
      who.appendChild(el("span", "badge", run.kind));
      who.appendChild(document.createTextNode(" "));
      who.appendChild(el("span", "badge " + statusClass(run.status), run.status));
      if (run.end !== null && run.start !== null) {
        who.appendChild(document.createTextNode(" "));
        who.appendChild(el("span", "badge", duration(run.end - run.start)));
      }
      if (run.error) { who.appendChild(el("div", "error-text", run.error)); }
      line.appendChild(who);
      var runTrack = el("div", "track");
      if (run.start !== null) {
        runTrack.appendChild(bar(statusClass(run.status), run.start, run.end, t0, span));
      } else {
        runTrack.appendChild(el("span", "bar-text", run.status));
      }
      line.appendChild(runTrack);
      into.appendChild(line);
    });
    if (send.more_receivers) {
      var more = el("div", "row receiver depth-" + Math.min(depth, 2));
      more.appendChild(el("div", "label none", send.more_receivers + " more receivers, not kept"));
      into.appendChild(more);
    }
  }

  function axis(span) {
    var row = el("div", "axis");
    row.appendChild(el("div", "label", "signal · receivers"));
    var ticks = el("div", "ticks");
    [0, 0.25, 0.5, 0.75, 1].forEach(function (f) {
      var tick = el("span", null, duration(span * f));
      tick.style.left = f * 100 + "%";
      ticks.appendChild(tick);
    });
    row.appendChild(ticks);
    return row;
  }

  function renderDetail() {
    var trace = selected === null ? null : traces.get(selected);
    if (!trace) {
      detail.hidden = true;
      return;
    }
    detail.hidden = false;
    var name = label(trace);
    detailTitle.textContent = (name.method ? name.method + " " : "") + name.text;
    var meta = [clock(trace.start), "worker " + workerLabel(trace.worker)];
    var state = statusText(trace);
    if (state) { meta.push("status " + state); }
    if (trace.end !== null && trace.end !== undefined) {
      meta.push(duration(trace.end - trace.start));
    } else {
      meta.push("running");
    }
    if (trace.more) { meta.push(trace.more + " more sends not kept"); }
    detailMeta.textContent = meta.join(" · ");
    detailError.hidden = !trace.error;
    detailError.textContent = trace.error || "";

    var children = childrenOf(trace);
    var t0 = trace.start;
    var end = traceEnd(trace);
    children.forEach(function (child) { end = Math.max(end, traceEnd(child.trace)); });
    if (trace.end === null || trace.end === undefined) { end = Math.max(end, Date.now() / 1000); }
    var span = Math.max(end - t0, 1e-6);

    var rows = document.createDocumentFragment();
    rows.appendChild(axis(span));
    var all = showEmpty.checked;
    var shownSends = 0;
    function visible(send) { return all || hasReceivers(send) || send.status === "failed"; }
    function walk(owner, parent, depth) {
      owner.sends.forEach(function (send) {
        if ((send.parent === undefined ? null : send.parent) !== parent) { return; }
        if (visible(send)) {
          sendRows(owner, send, depth, t0, span, rows);
          shownSends += 1;
        }
        walk(owner, send.n, depth + 1);
        children.forEach(function (child) {
          if (owner === trace && child.after === send.n) {
            rows.appendChild(el("div", "row worker-head",
              "↳ on " + workerLabel(child.trace.worker) + " (through the bridge)"));
            walk(child.trace, null, depth + 1);
          }
        });
      });
    }
    walk(trace, null, 0);
    if (!shownSends) {
      rows.appendChild(el("p", "none", all ? "No send." :
        "No send with a receiver: tick “sends with no receiver” to see the others."));
    }
    waterfall.replaceChildren(rows);
  }

  function render() {
    renderQueued = false;
    indexLinks();
    renderList();
    renderDetail();
  }

  function queueRender() {
    if (!renderQueued) {
      renderQueued = true;
      window.requestAnimationFrame(render);
    }
  }

  // The data.

  function keep(trace) {
    if (!wasCleared(trace)) { traces.set(trace.id, trace); }
  }

  function trim() {
    if (traces.size > capacity) {
      var oldest = Array.from(traces.values()).sort(function (a, b) { return a.start - b.start; });
      oldest.slice(0, traces.size - capacity).forEach(function (t) { traces.delete(t.id); });
    }
    // What is kept about traces no longer here goes too.
    openArgs.forEach(function (key) {
      if (!traces.has(key.slice(0, key.lastIndexOf("/")))) { openArgs.delete(key); }
    });
    if (cleared.size > 10 * capacity) { cleared.clear(); } // clearedBefore still holds
  }

  function apply(message) {
    if (message.type === "snapshot") {
      traces.clear();
      message.traces.forEach(keep);
    } else if (message.type === "update") {
      (message.removed || []).forEach(function (id) { traces.delete(id); });
      message.traces.forEach(keep);
      if (message.left_out) {
        leftOut += message.left_out;
        leftOutNote.textContent = leftOut + " requests came faster than the page shows " +
          "them, and were left out: it shows a sample, and every change to those it shows.";
        leftOutNote.hidden = false;
      }
    }
    trim();
    queueRender();
  }

  // While paused, what arrives is kept, the latest state of each trace only.
  function hold(message) {
    if (waiting === null || message.type === "snapshot") {
      waiting = { snapshot: message.type === "snapshot", traces: new Map(), removed: [], leftOut: 0 };
    }
    message.traces.forEach(function (trace) { waiting.traces.set(trace.id, trace); });
    (message.removed || []).forEach(function (id) {
      waiting.traces.delete(id);
      waiting.removed.push(id);
    });
    waiting.leftOut += message.left_out || 0;
    if (waiting.traces.size > capacity) {
      // The newest are what the page would show: the others would go.
      var held = Array.from(waiting.traces.values()).sort(function (a, b) { return b.start - a.start; });
      held.slice(capacity).forEach(function (trace) {
        if (!traces.has(trace.id)) { waiting.traces.delete(trace.id); }
      });
    }
  }

  function release() {
    if (waiting !== null) {
      apply({
        type: waiting.snapshot ? "snapshot" : "update",
        traces: Array.from(waiting.traces.values()),
        removed: waiting.removed,
        left_out: waiting.leftOut
      });
      waiting = null;
    }
  }

  function say(text) {
    notice.textContent = text;
    notice.hidden = !text;
  }

  function setStatus(text, className) {
    status.textContent = text;
    status.className = className || "";
  }

  function receive(text) {
    var message = JSON.parse(text);
    if (message.type === "closed") {
      ended = true;
      setStatus("closed");
      say("The monitor was closed: the page shows what it had.");
      return false;
    }
    if (message.type === "refused") {
      ended = true;
      setStatus("not live");
      say(message.message);
      return false;
    }
    if (message.type === "snapshot") {
      connected = true;
      setStatus(paused ? "paused" : "live", paused ? "paused" : "live");
      status.title = "served by " + workerLabel(message.worker);
    }
    if (paused) {
      hold(message);
      setStatus("paused (" + waiting.traces.size + " updates waiting)", "paused");
    } else {
      apply(message);
    }
    return true;
  }

  // The connection: a websocket, or server-sent events where the server
  // has no websocket library.

  function useEvents() {
    var url = new URL("events", location.href);
    var source = new EventSource(url);
    source.onmessage = function (event) {
      if (!receive(event.data)) { source.close(); }
    };
    source.onerror = function () {
      connected = false;
      if (ended) { return; }
      if (source.readyState !== EventSource.CLOSED) {
        setStatus("reconnecting…");
        return;
      }
      // Refused (a 403 says why), or gone: the browser does not retry.
      ended = true;
      setStatus("not live");
      var stop = new AbortController();
      fetch(url, { signal: stop.signal, cache: "no-store" }).then(function (response) {
        if (response.ok) {
          stop.abort();
          say("The live connection ended: reload the page.");
          return;
        }
        return response.text().then(function (why) { say(why); });
      }).catch(function () { say("The live connection ended: reload the page."); });
    };
  }

  function connect() {
    var url = new URL("live", location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    var opened = false;
    var socket = new WebSocket(url);
    socket.onopen = function () { opened = true; };
    socket.onmessage = function (event) {
      if (!receive(event.data)) { socket.close(); }
    };
    socket.onclose = function () {
      connected = false;
      if (ended) { return; }
      if (!opened) {
        // No websocket here (the server has no websocket library, or a
        // proxy in between does not pass them): server-sent events.
        useEvents();
        return;
      }
      setStatus("reconnecting…");
      setTimeout(connect, 1000);
    };
  }

  // The controls.

  function select(id) {
    selected = id;
    render();
    // Where the waterfall is below the list (a narrow window), go to it.
    if (id !== null && detail.getBoundingClientRect().top > window.innerHeight) {
      detail.scrollIntoView({ block: "start" });
    }
  }

  tbody.addEventListener("click", function (event) {
    var row = event.target.closest("tr");
    if (!row) { return; }
    select(row.dataset.id === selected ? null : row.dataset.id);
  });
  tbody.addEventListener("keydown", function (event) {
    if (event.key !== "Enter" && event.key !== " ") { return; }
    var row = event.target.closest("tr");
    if (!row) { return; }
    event.preventDefault();
    select(row.dataset.id);
  });
  document.getElementById("close-detail").addEventListener("click", function () {
    selected = null;
    render();
  });
  search.addEventListener("input", queueRender);
  showEmpty.addEventListener("change", queueRender);
  pauseButton.addEventListener("click", function () {
    paused = !paused;
    pauseButton.setAttribute("aria-pressed", String(paused));
    pauseButton.textContent = paused ? "Resume" : "Pause";
    if (!paused) {
      release();
      if (!ended && connected) { setStatus("live", "live"); }
    } else if (!ended && connected) {
      setStatus("paused", "paused");
    }
  });
  clearButton.addEventListener("click", function () {
    var known = Array.from(traces.values());
    if (waiting !== null) { known = known.concat(Array.from(waiting.traces.values())); }
    known.forEach(function (trace) {
      cleared.add(trace.id);
      var before = clearedBefore.get(trace.worker);
      if (before === undefined || trace.start > before) { clearedBefore.set(trace.worker, trace.start); }
    });
    traces.clear();
    waiting = null;
    if (paused && !ended && connected) { setStatus("paused", "paused"); }
    selected = null;
    leftOut = 0;
    leftOutNote.hidden = true;
    render();
  });

  if (top.dataset.closed) {
    ended = true;
    say("The monitor was closed.");
  } else {
    connect();
  }
  render();
})();
