// boundq dashboard: keeps the figures of a live page fresh without reloading it. Every few
// seconds (body[data-refresh]) while the tab is visible and "live" is ticked, the page is
// fetched again and each element marked data-live is replaced by its new version.
(() => {
  "use strict";
  const seconds = Number(document.body.dataset.refresh || 0);
  if (!seconds) return;
  const toggle = document.getElementById("auto-refresh");
  let busy = false;
  async function refresh() {
    if (busy || document.hidden || (toggle && !toggle.checked)) return;
    busy = true;
    try {
      const response = await fetch(location.href, { credentials: "same-origin" });
      if (!response.ok || response.redirected) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const old of document.querySelectorAll("[data-live][id]")) {
        const next = fresh.getElementById(old.id);
        if (next) old.replaceWith(next);
      }
    } catch (e) {
      // The server or the network is away: keep what is shown, try again next tick.
    } finally {
      busy = false;
    }
  }
  setInterval(refresh, seconds * 1000);
})();
