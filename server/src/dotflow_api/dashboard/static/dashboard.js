// dotflow-api dashboard: refreshes a page that shows something still running.
// A page opts in with <main data-live="true" data-refresh="SECONDS">; every SECONDS
// it fetches itself and swaps in the new <main>, until the new one says it is over.
(function () {
  "use strict";
  var main = document.getElementById("main");
  if (!main || main.dataset.live !== "true") {
    return;
  }
  var seconds = Math.max(parseFloat(main.dataset.refresh) || 2, 1);

  function refresh() {
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok || response.redirected) {
          throw new Error("stopped: " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var page = new DOMParser().parseFromString(html, "text/html");
        var fresh = page.getElementById("main");
        if (!fresh) {
          return;
        }
        main.innerHTML = fresh.innerHTML;
        main.dataset.live = fresh.dataset.live;
        document.title = page.title;
        if (fresh.dataset.live === "true") {
          window.setTimeout(refresh, seconds * 1000);
        }
      })
      .catch(function () {
        var note = main.querySelector(".live");
        if (note) {
          note.textContent = "Live updates stopped; reload the page to see the latest state.";
        }
      });
  }

  window.setTimeout(refresh, seconds * 1000);
})();
