// Live timeline: rows pushed by /ui/events (server-rendered and escaped there) go on top, or
// replace the row of the same decision when its execution moved on.  No framework, no build.
(function () {
  "use strict";
  var body = document.getElementById("decisions");
  var status = document.getElementById("live-status");
  if (!body || !body.dataset.stream || !window.EventSource) {
    return;
  }
  var source = new EventSource(body.dataset.stream);

  function rowFrom(html) {
    var holder = document.createElement("template");
    holder.innerHTML = html.trim();
    return holder.content.firstElementChild;
  }

  source.addEventListener("decision", function (event) {
    var data = JSON.parse(event.data);
    var row = rowFrom(data.html);
    if (!row) {
      return;
    }
    var existing = body.querySelector('tr[data-id="' + CSS.escape(data.id) + '"]');
    if (existing) {
      existing.replaceWith(row);
    } else {
      body.insertBefore(row, body.firstElementChild);
      row.classList.add("fresh");
      var empty = document.getElementById("empty");
      if (empty) {
        empty.remove();
      }
    }
  });
  source.addEventListener("reset", function () {
    source.close();
    window.location.reload();
  });
  source.addEventListener("unavailable", function () {
    status.textContent = "Live updates: the store is unavailable; retrying.";
  });
  source.addEventListener("open", function () {
    status.textContent = "Live: new decisions appear at the top.";
  });
  source.addEventListener("error", function () {
    status.textContent = "Live updates interrupted; reconnecting.";
  });
})();
