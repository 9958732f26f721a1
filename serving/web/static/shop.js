// Shop front: the shopper (?user=), the search (?q=) and the product (?item=) come from the
// address; the lists are the API's answers rendered by the server. Opening a product sends a
// click, the product's buttons send add_to_cart / purchase, a search sends a search event,
// all to POST /v1/events; then the recommendations are loaded again and change.
"use strict";

(() => {
  const USER_KEY = "shoprec.user", RECENT_KEY = "shoprec.recentUsers";
  const SESSION_KEY = "shoprec.session";
  const params = new URLSearchParams(location.search);
  const status = document.getElementById("status");

  function randomId() {
    const bytes = new Uint8Array(8);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function pageUrl(values) {
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(values)) {
      if (value) {
        query.set(name, value);
      }
    }
    return Shoprec.root + "/shop?" + query.toString();
  }

  function remember(user) {
    sessionStorage.setItem(USER_KEY, user);
    const recent = JSON.parse(localStorage.getItem(RECENT_KEY) || "[]").filter((u) => u !== user);
    recent.unshift(user);
    localStorage.setItem(RECENT_KEY, JSON.stringify(recent.slice(0, 10)));
    const list = document.getElementById("recent-users");
    list.replaceChildren(...recent.slice(0, 10).map((u) => {
      const option = document.createElement("option");
      option.value = u;
      return option;
    }));
  }

  // The shopper: from the address, else this tab's, else a new visitor.
  const user = (params.get("user") || "").trim() || sessionStorage.getItem(USER_KEY)
    || "visitor-" + randomId();
  if (params.get("user") !== user) {
    params.set("user", user);
    history.replaceState(null, "", Shoprec.root + "/shop?" + params.toString());
  }
  remember(user);
  const session = sessionStorage.getItem(SESSION_KEY) || "web-" + randomId();
  sessionStorage.setItem(SESSION_KEY, session);

  const userInput = document.getElementById("user");
  const queryInput = document.getElementById("q");
  userInput.value = user;
  queryInput.value = params.get("q") || "";

  function say(text) {
    status.textContent = text;
  }

  // POST the events; true when the API stored them.
  async function send(events) {
    const body = events.map((e) => Object.assign(
      {user_id: user, session_id: session, event_id: "web-" + randomId()}, e));
    try {
      const response = await fetch(Shoprec.root + "/v1/events", {
        method: "POST", headers: Shoprec.headers("events", {"Content-Type": "application/json"}),
        body: JSON.stringify(body)});
      if (!response.ok) {
        say("Event not recorded: " + await Shoprec.errorText(response));
        return false;
      }
      return true;
    } catch (e) {
      say("Event not recorded: the API did not answer (" + e.message + ")");
      return false;
    }
  }

  const recommendations = document.getElementById("recommendations-body");
  function loadRecommendations() {
    return Shoprec.loadFragment("/web/shop/recommendations?" + new URLSearchParams({user_id: user}),
                                "public", recommendations);
  }

  const item = params.get("item");
  if (item) {
    const product = document.getElementById("product");
    product.hidden = false;
    Shoprec.loadFragment("/web/shop/items/" + encodeURIComponent(item) + "?"
                         + new URLSearchParams({user_id: user}), "public", product);
  }
  const q = (params.get("q") || "").trim();
  const sortInput = document.getElementById("sort");
  const sort = ["price_asc", "price_desc"].includes(params.get("sort")) ? params.get("sort")
    : "relevance";
  sortInput.value = sort;
  if (q && !item) {
    document.getElementById("results").hidden = false;
    Shoprec.loadFragment("/web/shop/search?" + new URLSearchParams({q: q, user_id: user, sort: sort}),
                         "public", document.getElementById("results-body"));
  }

  // Suggestions while typing: the shop's own past searches (GET /v1/autocomplete).
  const suggestions = document.getElementById("suggestions");
  let typed = 0;
  queryInput.addEventListener("input", () => {
    const prefix = queryInput.value.trim();
    const asked = ++typed;
    if (prefix.length < 2) {
      suggestions.replaceChildren();
      return;
    }
    setTimeout(async () => {
      if (asked !== typed) {
        return;                      // the shopper kept typing
      }
      try {
        const response = await fetch(Shoprec.root + "/v1/autocomplete?"
          + new URLSearchParams({prefix: prefix, k: 8}), {headers: Shoprec.headers("public")});
        if (!response.ok || asked !== typed) {
          return;
        }
        const body = await response.json();
        suggestions.replaceChildren(...body.suggestions.map((s) => {
          const option = document.createElement("option");
          option.value = s.query;
          return option;
        }));
      } catch (e) {
        // suggestions are a convenience: the search itself still works
      }
    }, 150);
  });
  sortInput.addEventListener("change", () => {
    if (q && !item) {
      location.href = pageUrl({user: user, q: q, sort: sortInput.value});
    }
  });
  loadRecommendations();

  document.getElementById("user-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = userInput.value.trim();
    if (chosen) {
      sessionStorage.setItem(USER_KEY, chosen);
      location.href = pageUrl({user: chosen});
    }
  });
  document.getElementById("new-visitor").addEventListener("click", () => {
    const visitor = "visitor-" + randomId();
    sessionStorage.setItem(USER_KEY, visitor);
    location.href = pageUrl({user: visitor});
  });
  document.getElementById("search-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = queryInput.value.trim();
    if (!text) {
      say("Type something to search for.");
      return;
    }
    await send([{event_type: "search", query: text}]);
    location.href = pageUrl({user: user, q: text,
                             sort: sortInput.value === "relevance" ? "" : sortInput.value});
  });

  // Opening a product from any list is a click on it.
  document.addEventListener("click", async (event) => {
    const link = event.target.closest("a.item-link");
    if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) {
      return;
    }
    event.preventDefault();
    await send([{event_type: "click", item_id: link.dataset.itemId}]);
    location.href = link.href;
  });

  // Add to cart / Buy on the product page.
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) {
      return;
    }
    button.disabled = true;
    const done = await send([
      {event_type: button.dataset.action, item_id: button.dataset.itemId, value: 1}]);
    button.disabled = false;
    if (done) {
      await loadRecommendations();
      const what = button.dataset.action === "purchase" ? "Bought" : "Added to cart";
      say(what + ": recommendations updated.");
    }
  });
})();
