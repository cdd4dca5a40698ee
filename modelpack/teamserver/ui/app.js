// The modelpack web UI: hash routes, the header (token, who am I) and the message banner.

import { ApiError, api, getToken, setToken } from "./api.js";
import { append, h } from "./dom.js";
import { comparePage } from "./compare.js";
import { deploymentsPage } from "./deployments.js";
import { experimentsPage } from "./experiments.js";
import { modelPage, modelsPage, versionPage } from "./models.js";
import { runPage } from "./run.js";

const ROUTES = [
  [/^\/?$/, experimentsPage, "experiments"],
  [/^\/experiments$/, experimentsPage, "experiments"],
  [/^\/runs\/([^/]+)$/, runPage, "experiments"],
  [/^\/compare$/, comparePage, "experiments"],
  [/^\/models$/, modelsPage, "models"],
  [/^\/models\/([^/]+)$/, modelPage, "models"],
  [/^\/models\/([^/]+)\/versions\/([^/]+)$/, versionPage, "models"],
  [/^\/deployments$/, deploymentsPage, "deployments"],
];

const main = document.getElementById("main");
const banner = document.getElementById("banner");
let current = null; // the page being shown, with what to undo when it goes

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [pathPart, search = ""] = raw.split("?", 2);
  return { path: pathPart, query: new URLSearchParams(search) };
}

// Show the page the hash names. A refresh (after a change) keeps the banner, the scroll
// position and the old content until the new one is ready.
async function render({ refresh = false } = {}) {
  if (current) for (const undo of current.cleanups) undo();
  if (!refresh) {
    hideBanner();
    window.scrollTo(0, 0);
  }
  const { path, query } = parseHash();
  const match = ROUTES.map(([re, page, nav]) => [path.match(re), page, nav]).find(([m]) => m);
  const page = { cleanups: [] };
  current = page;
  for (const a of document.querySelectorAll(".nav a")) {
    a.classList.toggle("active", Boolean(match) && a.dataset.section === match[2]);
  }
  if (!match) {
    main.replaceChildren(h("h1", null, "Not found"), h("p", null, `No page at #${path}.`));
    document.title = "Not found · modelpack";
    return;
  }
  const [m, pageFn] = match;
  const ctx = {
    params: m.slice(1).map(decodeSegment),
    query,
    // Show the page's content, unless the user has moved on meanwhile.
    show(title, ...nodes) {
      if (current !== page) return false;
      document.title = `${title} · modelpack`;
      main.replaceChildren();
      append(main, nodes);
      return true;
    },
    onLeave(undo) {
      if (current === page) page.cleanups.push(undo);
      else undo();
    },
    refresh: () => render({ refresh: true }),
    notify: showBanner,
    fail: (error) => showError(error),
  };
  if (!refresh) main.replaceChildren(h("p", { class: "muted loading" }, "Loading…"));
  try {
    await pageFn(ctx);
  } catch (error) {
    if (current !== page) return;
    showError(error);
    main.replaceChildren(h("p", { class: "empty" }, "This page could not be loaded."));
  }
}

function decodeSegment(segment) {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment; // a stray '%' typed into the address bar
  }
}

function showError(error) {
  if (error?.status === 401) {
    const message = "This server needs a valid token: paste one into the Token field.";
    showBanner("error", message, error.message);
  } else if (error?.status === 403) {
    showBanner("error", "This action needs a token with write role.", error.message);
  } else {
    showBanner("error", error?.message ?? String(error));
    // Anything but an API answer is a bug in this UI: leave a trace for whoever debugs it.
    if (!(error instanceof ApiError)) console.error(error);
  }
}

function showBanner(kind, message, detail) {
  banner.className = `banner banner-${kind}`;
  banner.replaceChildren(
    h(
      "div",
      { class: "banner-text" },
      detail ? [h("strong", null, message), h("div", { class: "banner-detail" }, detail)] : message,
    ),
    h(
      "button",
      { type: "button", class: "banner-close", title: "Dismiss", onclick: hideBanner },
      "×",
    ),
  );
  banner.hidden = false;
}

function hideBanner() {
  banner.hidden = true;
  banner.replaceChildren();
}

async function showIdentity() {
  const target = document.getElementById("whoami");
  const badge = (text, kind = "") => h("span", { class: `badge ${kind}`.trim() }, text);
  try {
    const me = await api("/whoami");
    if (me.auth === "none") target.replaceChildren(badge("open access"));
    else if (me.role) target.replaceChildren(badge(`${me.role} token`, "badge-ok"));
    else if (getToken()) target.replaceChildren(badge("token not recognised", "badge-bad"));
    else target.replaceChildren(badge("no token", "badge-bad"));
  } catch (error) {
    target.replaceChildren(badge("server unreachable", "badge-bad"));
    showError(error);
  }
}

function setUpToken() {
  const input = document.getElementById("token");
  input.value = getToken();
  // Enter in the field submits its form: keep the page, the change event stores the token.
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    input.blur();
  });
  input.addEventListener("change", () => {
    setToken(input.value.trim());
    showIdentity();
    render();
  });
}

setUpToken();
showIdentity();
window.addEventListener("hashchange", () => render());
render();
