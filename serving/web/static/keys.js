// shoprec pages: the API keys of this browser tab and the fetching of HTML fragments with them.
// Keys are kept in sessionStorage only (never a cookie, never sent to another site). A page
// URL may bring them in its fragment (#public=...&events=...&operator=...), which is read
// once and removed from the address bar.
"use strict";

const Shoprec = (() => {
  const PREFIX = "shoprec.key.";
  const root = document.body.dataset.root || "";

  function takeKeysFromFragment() {
    const found = new URLSearchParams(location.hash.slice(1));
    let any = false;
    for (const role of ["public", "events", "operator"]) {
      if (found.get(role)) {
        sessionStorage.setItem(PREFIX + role, found.get(role).trim());
        any = true;
      }
    }
    if (any) {
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function key(role) {
    return sessionStorage.getItem(PREFIX + role) || "";
  }

  function headers(role, extra) {
    const found = key(role) || key("operator");
    return Object.assign(found ? {"Authorization": "Bearer " + found} : {}, extra || {});
  }

  async function errorText(response) {
    let text = response.status + " " + response.statusText;
    try {
      const body = await response.json();
      if (body && body.error) {
        text = response.status + ": " + body.error;
      }
    } catch (ignored) { /* not JSON */ }
    if (response.status === 401 || response.status === 403) {
      text += " (enter a key under “API keys” above)";
    }
    return text;
  }

  function showError(target, message) {
    const p = document.createElement("p");
    p.className = "error";
    p.setAttribute("role", "alert");
    p.textContent = message;
    target.replaceChildren(p);
  }

  // Loads url (an HTML fragment rendered and escaped by the server) into target; true when
  // it did, else target says why.
  async function loadFragment(url, role, target) {
    target.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(root + url, {headers: headers(role)});
      if (response.ok) {
        target.innerHTML = await response.text();
        return true;
      }
      showError(target, await errorText(response));
    } catch (e) {
      showError(target, "The API did not answer: " + e.message);
    } finally {
      target.removeAttribute("aria-busy");
    }
    return false;
  }

  // The "API keys" form: shows which keys are set, saves new ones, reloads the page.
  function bindKeyForm() {
    const form = document.getElementById("key-form");
    if (!form) {
      return;
    }
    const inputs = form.querySelectorAll("input[data-role]");
    let missing = false;
    for (const input of inputs) {
      input.placeholder = key(input.dataset.role) ? "set (type to replace)" : "not set";
      missing = missing || !key(input.dataset.role);
    }
    if (missing && !key("operator")) {
      document.getElementById("keys").open = true;
    }
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      for (const input of inputs) {
        if (input.value.trim()) {
          sessionStorage.setItem(PREFIX + input.dataset.role, input.value.trim());
        }
      }
      location.reload();
    });
  }

  takeKeysFromFragment();
  bindKeyForm();
  return {root, key, headers, errorText, showError, loadFragment};
})();
