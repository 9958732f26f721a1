// Operator console: loads the view's fragment with the operator key; the traffic view
// reloads itself every few seconds while the page is visible.
"use strict";

(() => {
  const body = document.getElementById("view-body");
  const url = "/web/console/" + encodeURIComponent(body.dataset.view);
  const refresh = Number(body.dataset.refreshS || 0);

  async function load() {
    const loaded = await Shoprec.loadFragment(url, "operator", body);
    if (loaded && refresh > 0) {
      setTimeout(() => {
        if (document.visibilityState === "visible") {
          load();
        } else {
          document.addEventListener("visibilitychange", load, {once: true});
        }
      }, refresh * 1000);
    }
  }

  load();
})();
