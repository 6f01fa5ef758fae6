// The Sluice web console: a few pages over the JSON API (/api/v1). Every
// value shown is put in the page as text (textContent), never as markup.
"use strict";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
let me = null; // GET /api/v1/console/session
let teardown = []; // what the current page must stop when it is left
let flash = null; // a notice for the next page shown

// h builds an element: attributes from an object, children from strings
// (text nodes) and elements.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function show(...nodes) {
  main.replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined && n !== false));
}

class SignedOut extends Error {}

// api calls the JSON API with the session cookie; requests that change
// something carry the session's CSRF token.
async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-Sluice-CSRF"] = me ? me.csrf : "";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try {
    data = await resp.json();
  } catch (_) {
    data = null;
  }
  if (resp.status === 401) throw new SignedOut((data && data.reason) || "signed out");
  if (!resp.ok) {
    const err = new Error((data && (data.reason || data.error)) || resp.statusText);
    err.status = resp.status;
    err.data = data;
    throw err;
  }
  return data;
}

function errorBox(err) {
  return h("div", { class: "error", role: "alert" }, err.message || String(err));
}

function fmtTime(v) {
  if (!v) return "";
  const d = new Date(v);
  return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function timeLeft(until) {
  const ms = new Date(until) - Date.now();
  if (ms <= 0) return "expired";
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}m ${s % 60}s left` : `${s}s left`;
}

function badge(text, cls) {
  return h("span", { class: "badge " + (cls || text) }, text);
}

function signInPage(reason) {
  nav.replaceChildren();
  who.replaceChildren();
  const next = "/console/";
  sessionStorage.setItem("sluice.after", location.hash || "#/inbox");
  show(
    h("div", { class: "signin card" },
      h("h1", {}, "Sluice console"),
      h("p", { class: "muted" }, reason ? reason : "Sign in with your organisation's identity provider."),
      h("p", {}, h("a", { id: "signin", class: "button primary", href: "/console/login?next=" + encodeURIComponent(next) }, "Sign in")),
    ),
  );
}

// Pages ---------------------------------------------------------------

const pages = {
  inbox: { title: "Approvals", allowed: () => true, render: inboxPage },
  grants: { title: "Grants", allowed: () => true, render: grantsPage },
  sessions: { title: "Sessions", allowed: () => me.auditor, render: sessionsPage },
  session: { title: null, allowed: () => me.auditor, render: sessionPage },
  playground: { title: "Policy playground", allowed: () => me.policy_reader, render: playgroundPage },
  targets: { title: "Targets", allowed: () => true, render: targetsPage },
};

function renderNav(current) {
  nav.replaceChildren(
    ...Object.entries(pages)
      .filter(([, p]) => p.title && p.allowed())
      .map(([name, p]) => h("a", { href: "#/" + name, class: name === current || (current === "session" && name === "sessions") ? "active" : "", id: "nav-" + name }, p.title)),
  );
  const roles = [me.admin && "admin", me.auditor && "auditor", me.approver && "approver"].filter(Boolean);
  who.replaceChildren(
    h("span", { id: "principal" }, me.principal.subject),
    roles.length ? h("span", { class: "muted" }, roles.join(", ")) : null,
    h("button", { type: "button", id: "signout", onclick: signOut }, "Sign out"),
  );
}

async function signOut() {
  try {
    await api("POST", "/console/logout");
  } catch (_) {
    /* signed out either way */
  }
  me = null;
  signInPage("Signed out.");
}

async function route() {
  for (const stop of teardown) stop();
  teardown = [];
  const [name, ...rest] = (location.hash.replace(/^#\/?/, "") || "inbox").split("/");
  const page = pages[name] || pages.inbox;
  renderNav(name);
  if (!page.allowed()) {
    show(h("h1", {}, "Not available"), h("p", { class: "muted", id: "forbidden" }, "Your groups do not give you this page."));
    return;
  }
  show(h("p", { class: "muted" }, "Loading…"));
  try {
    await page.render(...rest.map(decodeURIComponent));
  } catch (err) {
    if (err instanceof SignedOut) signInPage("Your session ended: " + err.message);
    else show(errorBox(err));
  }
}

// Approvals inbox: pending requests, live.
async function inboxPage() {
  const status = h("span", { class: "muted", id: "live" }, h("span", { class: "live" }), "connecting…");
  const list = h("div", { id: "pending" });
  const history = h("div", { id: "history" });
  show(h("h1", {}, "Approvals ", status), list, h("h2", {}, "Recently decided"), history);

  const renderPending = (approvals) => {
    if (!approvals.length) {
      list.replaceChildren(h("p", { class: "muted", id: "empty" }, "Nothing is waiting for a decision."));
      return;
    }
    list.replaceChildren(...approvals.map(approvalCard));
  };
  const es = new EventSource("/api/v1/approvals/events?state=pending");
  teardown.push(() => es.close());
  es.addEventListener("approvals", (ev) => {
    status.replaceChildren(h("span", { class: "live on" }), "live");
    renderPending(JSON.parse(ev.data).approvals);
    loadHistory(history);
  });
  es.addEventListener("error", (ev) => {
    if (ev.data) {
      const e = JSON.parse(ev.data);
      es.close();
      signInPage("Your session ended: " + e.reason);
      return;
    }
    status.replaceChildren(h("span", { class: "live" }), "reconnecting…");
    if (es.readyState === EventSource.CLOSED) {
      api("GET", "/api/v1/console/session").catch((err) => err instanceof SignedOut && signInPage("Your session ended: " + err.message));
    }
  });
  const tick = setInterval(() => {
    for (const el of document.querySelectorAll("[data-expires]")) el.textContent = timeLeft(el.dataset.expires);
  }, 1000);
  teardown.push(() => clearInterval(tick));
}

async function loadHistory(into) {
  try {
    const data = await api("GET", "/api/v1/approvals?state=all&limit=25");
    const done = data.approvals
      .filter((a) => a.state !== "pending")
      .sort((x, y) => new Date(y.updated_at || y.created_at) - new Date(x.updated_at || x.created_at))
      .slice(0, 25);
    into.replaceChildren(
      done.length
        ? h("table", {},
            h("tr", {}, ["Last change", "Type", "Requester", "Target", "Command or role", "State", "By", "Reason"].map((t) => h("th", {}, t))),
            done.map((a) =>
              h("tr", {},
                h("td", {}, fmtTime(a.updated_at || a.created_at)),
                h("td", {}, a.type),
                h("td", {}, a.requester),
                h("td", {}, a.target),
                h("td", {}, h("code", {}, a.command || a.role || "")),
                h("td", {}, badge(a.state, a.state === "approved" || a.state === "consumed" ? "allow" : a.state === "denied" ? "deny" : "")),
                h("td", {}, a.decided_by || (a.approved_by || []).join(", ")),
                h("td", {}, a.decision_reason || ""),
              ),
            ),
          )
        : h("p", { class: "muted" }, "No decisions yet."),
    );
  } catch (err) {
    if (!(err instanceof SignedOut)) into.replaceChildren(errorBox(err));
  }
}

function approvalCard(a) {
  const out = h("div", { class: "result" });
  const reason = h("input", { name: "reason", placeholder: "reason", size: 40, "aria-label": "reason" });
  const decide = (verdict) => async (ev) => {
    ev.preventDefault();
    try {
      await api("POST", `/api/v1/approvals/${encodeURIComponent(a.id)}/${verdict}`, { reason: reason.value });
      out.replaceChildren(h("div", { class: "notice" }, verdict === "approve" ? "Approved." : "Denied."));
    } catch (err) {
      if (err instanceof SignedOut) return signInPage("Your session ended: " + err.message);
      out.replaceChildren(errorBox(err));
    }
  };
  const session = a.session && me.auditor ? h("a", { href: "#/session/" + encodeURIComponent(a.session) }, a.session) : a.session;
  return h("div", { class: "card approval", "data-id": a.id },
    h("h3", {}, a.type === "grant" ? `Grant of ${a.role} on ${a.target}` : `Held ${a.protocol || ""} command on ${a.target}`, " ", badge(a.state)),
    a.command ? h("pre", { class: "cmd" }, a.command) : null,
    h("dl", {},
      h("dt", {}, "Requester"), h("dd", { class: "requester" }, a.requester, a.machine ? " (machine)" : ""),
      h("dt", {}, "Target"), h("dd", {}, a.target),
      session ? [h("dt", {}, "Session"), h("dd", {}, session)] : null,
      a.rule ? [h("dt", {}, "Rule"), h("dd", {}, h("code", {}, a.rule))] : null,
      a.reason ? [h("dt", {}, "Reason"), h("dd", {}, a.reason)] : null,
      h("dt", {}, "Approvers"), h("dd", {}, (a.approver_groups || []).join(", "), a.quorum > 1 ? ` (quorum ${a.quorum}, ${(a.approved_by || []).length} so far)` : ""),
      h("dt", {}, "Requested"), h("dd", {}, fmtTime(a.created_at)),
      a.expires_at ? [h("dt", {}, "Time left"), h("dd", { "data-expires": a.expires_at }, timeLeft(a.expires_at))] : null,
      a.type === "request" ? [h("dt", {}, "Client"), h("dd", {}, a.requester_waiting ? "waiting" : "not connected")] : null,
    ),
    me.approver
      ? h("form", { class: "inline", onsubmit: decide("approve") },
          reason,
          h("button", { class: "primary approve", type: "submit" }, "Approve"),
          h("button", { class: "danger deny", type: "button", onclick: decide("deny") }, "Deny"),
        )
      : h("p", { class: "muted" }, "You are not in an approver group."),
    out,
  );
}

// Grants: request, list, revoke.
async function grantsPage() {
  const [grants, targets] = await Promise.all([api("GET", "/api/v1/grants?state=all"), api("GET", "/api/v1/targets")]);
  const out = h("div", {}, flash ? h("div", { class: "notice" }, flash) : null);
  flash = null;
  const form = h("form", { class: "inline", id: "grant-form" },
    h("select", { name: "target", "aria-label": "target" }, targets.targets.map((t) => h("option", { value: t.name }, t.name))),
    h("input", { name: "role", placeholder: "role, e.g. writer", required: true, "aria-label": "role" }),
    h("input", { name: "duration", placeholder: "duration, e.g. 30m", required: true, "aria-label": "duration" }),
    h("input", { name: "reason", placeholder: "reason", size: 40, required: true, "aria-label": "reason" }),
    h("button", { class: "primary", type: "submit" }, "Request"),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    try {
      const r = await api("POST", "/api/v1/grants", Object.fromEntries(f.entries()));
      flash = `Requested: ${r.id}. An approver decides it in the approvals inbox.`;
      route();
    } catch (err) {
      out.replaceChildren(errorBox(err));
    }
  });
  const revoke = (g) => async () => {
    try {
      await api("POST", `/api/v1/grants/${encodeURIComponent(g.id)}/revoke`, { reason: "revoked in the console" });
      flash = `Revoked: ${g.id}.`;
      route();
    } catch (err) {
      out.replaceChildren(errorBox(err));
    }
  };
  const now = Date.now();
  show(
    h("h1", {}, "Grants"),
    h("div", { class: "card" }, h("h3", {}, "Request elevation"), form, out),
    grants.grants.length
      ? h("table", { id: "grants" },
          h("tr", {}, ["Requested", "Requester", "Target", "Role", "State", "Window", ""].map((t) => h("th", {}, t))),
          grants.grants.map((g) => {
            const active = g.state === "approved" && g.ends_at && new Date(g.ends_at) > now;
            return h("tr", {},
              h("td", {}, fmtTime(g.created_at)),
              h("td", {}, g.requester),
              h("td", {}, g.target),
              h("td", {}, g.role),
              h("td", {}, badge(active ? "active" : g.state, active ? "allow" : g.state)),
              h("td", {}, g.starts_at ? `${fmtTime(g.starts_at)} – ${fmtTime(g.ends_at)}` : ""),
              h("td", {}, active ? h("button", { type: "button", onclick: revoke(g) }, "Revoke") : ""),
            );
          }),
        )
      : h("p", { class: "muted" }, "No grants."),
  );
}

// Sessions: the filterable, paged list.
async function sessionsPage() {
  const params = new URLSearchParams(sessionStorage.getItem("sluice.sessions") || "");
  const field = (name, placeholder) => h("input", { name, placeholder, value: params.get(name) || "", "aria-label": name });
  const select = (name, options) =>
    h("select", { name, "aria-label": name }, options.map(([v, t]) => h("option", { value: v, selected: (params.get(name) || "") === v }, t)));
  const form = h("form", { class: "filters", id: "filters" },
    field("principal", "principal"),
    field("target", "target"),
    select("protocol", [["", "any protocol"], ["postgres", "postgres"], ["ssh", "ssh"], ["kubernetes", "kubernetes"], ["mcp", "mcp"]]),
    select("outcome", [["", "any outcome"], ["denied", "with denials"], ["held", "with held commands"], ["masked", "with masked values"]]),
    select("state", [["", "any state"], ["open", "open"], ["ended", "ended"], ["lost", "lost (worker gone)"]]),
    select("since", [["", "any time"], ["1h", "last hour"], ["24h", "last day"], ["168h", "last week"]]),
    h("button", { class: "primary", type: "submit" }, "Filter"),
  );
  const table = h("div", { id: "results" });
  show(h("h1", {}, "Sessions"), form, table);
  let cursor = "";
  const load = async (append) => {
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form).entries()) if (v) q.set(k, v);
    sessionStorage.setItem("sluice.sessions", q.toString());
    const outcome = q.get("outcome");
    q.delete("outcome");
    if (outcome) q.set(outcome, "true");
    q.set("limit", "50");
    if (append && cursor) q.set("before", cursor);
    const data = await api("GET", "/api/v1/sessions?" + q.toString());
    cursor = data.next || "";
    const rows = data.sessions.map((s) =>
      h("tr", { class: "session-row" },
        h("td", {}, h("a", { href: "#/session/" + encodeURIComponent(s.id) }, fmtTime(s.started_at))),
        h("td", {}, s.principal, s.machine ? " (machine)" : ""),
        h("td", {}, s.target),
        h("td", {}, s.protocol),
        h("td", {}, String(s.commands)),
        h("td", {}, s.denied ? badge(`${s.denied} denied`, "deny") : "", " ", s.held ? badge(`${s.held} held`, "held") : "", " ", s.masked ? badge(`${s.masked} masked`, "masked") : ""),
        h("td", { title: s.lost || "" }, s.ended_at ? `${fmtTime(s.ended_at)} (${s.end_reason || "ended"})` : s.state === "lost" ? badge("lost", "deny") : badge("open", "allow")),
      ),
    );
    let tbl = table.querySelector("table");
    if (!append || !tbl) {
      tbl = h("table", { id: "sessions" }, h("tr", {}, ["Started", "Principal", "Target", "Protocol", "Commands", "Outcome", "Ended"].map((t) => h("th", {}, t))));
      table.replaceChildren(tbl);
    }
    tbl.append(...rows);
    table.querySelector(".more")?.remove();
    if (!data.sessions.length && !append) table.replaceChildren(h("p", { class: "muted" }, "No sessions match."));
    if (cursor) table.append(h("p", { class: "more" }, h("button", { type: "button", onclick: () => load(true).catch(fail) }, "Older sessions")));
    table.dataset.query = q.toString(); // what the list shows (tests wait for it)
  };
  const fail = (err) => (err instanceof SignedOut ? signInPage("Your session ended: " + err.message) : table.replaceChildren(errorBox(err)));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    load(false).catch(fail);
  });
  await load(false);
}

// Session: transcript, terminal playback, chain verification.
async function sessionPage(id) {
  const [data, verify] = await Promise.all([
    api("GET", "/api/v1/sessions/" + encodeURIComponent(id)),
    api("GET", "/api/v1/audit/verify?session=" + encodeURIComponent(id)).catch((err) => ({ error: err })),
  ]);
  const events = data.events;
  const started = events.find((e) => e.kind === "started")?.event?.started || {};
  const verified = verify.error
    ? h("span", { class: "bad", id: "chain" }, "chain not verified: " + verify.error.message)
    : verify.ok
      ? h("span", { class: "ok", id: "chain" }, `✓ audit chain verified (${verify.records} records, ${verify.events} events)`)
      : h("span", { class: "bad", id: "chain" }, `✗ audit chain broken: ${verify.problems.map((p) => p.message || p.kind || JSON.stringify(p)).join("; ")}`);
  const io = events.filter((e) => e.kind === "io");
  show(
    h("p", {}, h("a", { href: "#/sessions" }, "← Sessions")),
    h("h1", {}, "Session ", h("code", {}, id)),
    h("div", { class: "card" },
      h("dl", {},
        h("dt", {}, "Principal"), h("dd", {}, started.principal?.subject || ""),
        h("dt", {}, "Target"), h("dd", {}, started.target?.name || ""),
        h("dt", {}, "Protocol"), h("dd", {}, started.protocol || ""),
        h("dt", {}, "Client"), h("dd", {}, [started.client_addr, started.client_application].filter(Boolean).join(" · ")),
        h("dt", {}, "Audit"), h("dd", {}, verified),
      ),
    ),
    io.length ? await terminal(id) : null,
    h("h2", {}, "Transcript"),
    h("div", { id: "transcript" }, events.map(transcriptEntry)),
  );
}

function decisionLine(d) {
  if (!d) return null;
  return h("div", { class: "meta" }, badge(d.action || "allow", d.action || "allow"), " ", d.rule ? h("code", {}, d.rule) : "", d.reason ? " — " + d.reason : "");
}

function transcriptEntry(e) {
  const ev = e.event || {};
  const at = h("span", { class: "meta" }, `#${e.seq} ${fmtTime(e.time)} `);
  switch (e.kind) {
    case "started": {
      const s = ev.started;
      return h("div", { class: "event" }, at, `session started by ${s.principal?.subject} on ${s.target?.name} (${s.protocol})`);
    }
    case "command": {
      const c = ev.command;
      const action = c.decision?.action || "allow";
      // shown: the text with what a screen would hide or reorder written out.
      return h("div", { class: "event command " + action }, at, h("pre", { class: "cmd" }, e.shown ?? c.text ?? ""), decisionLine(c.decision));
    }
    case "decided":
      return h("div", { class: "event " + (ev.decided.decision?.action || "") }, at, "decision for command ", String(ev.decided.command_id), decisionLine(ev.decided.decision));
    case "approval": {
      const a = ev.approval;
      const by = (a.approvers || []).join(", ");
      const text = {
        pending: `held for approval ${a.approval_id || ""}`,
        consumed: `approved by ${by || "an approver"} and run`,
        approved: `approved by ${by || "an approver"}`,
        denied: `denied${by ? " by " + by : ""}`,
        withdrawn: "withdrawn",
        expired: "expired before anyone decided",
      }[a.state] || `${a.state} ${a.approval_id || ""}`;
      return h("div", { class: "event approval" }, at, badge(a.state, a.state === "consumed" || a.state === "approved" ? "allow" : a.state === "pending" ? "held" : "deny"), " ", text, a.reason ? ` — ${a.reason}` : "");
    }
    case "result": {
      const r = ev.result;
      return h("div", { class: "event" }, at, r.error_code ? h("span", { class: "bad" }, `error ${r.error_code}: ${r.error_message || ""}`) : `${r.command_tag || "done"}${r.rows ? ` (${r.rows} rows)` : ""}`, r.duration_us ? ` in ${(r.duration_us / 1000).toFixed(1)} ms` : "");
    }
    case "masking":
      return h("div", { class: "event" }, at, badge("masked", "masked"), " ", (ev.masking.counts || []).map((c) => `${c.column || c.field || c.detector}: ${c.count}`).join(", "));
    case "io":
      return h("div", { class: "event" }, at, `${ev.io.stream} output (${ev.io.size || 0} bytes)`);
    case "ended": {
      const x = ev.ended;
      const n = Number(x.commands || 0);
      return h("div", { class: "event" }, at, `session ended: ${x.reason || ""} — ${n} ${n === 1 ? "command" : "commands"}, ${x.denied || 0} denied`);
    }
    case "gap":
      return h("div", { class: "event deny" }, at, `gap: events up to ${e.gap_to} were lost`);
    default:
      return h("div", { class: "event" }, at, e.kind, " ", h("code", {}, JSON.stringify(ev[e.kind] || {})));
  }
}

// terminal replays a session's output at its recorded pace (gaps over a
// second shortened), as text with control sequences removed. The API
// renders the recording as asciicast v2 (decompressing what the recorder
// stored compressed).
async function terminal(id) {
  const resp = await fetch("/api/v1/sessions/" + encodeURIComponent(id) + "?format=asciicast", { credentials: "same-origin" });
  if (!resp.ok) return errorBox(new Error("the terminal recording cannot be read"));
  const frames = (await resp.text())
    .split("\n")
    .slice(1)
    .filter(Boolean)
    .map((line) => {
      try {
        return JSON.parse(line);
      } catch (_) {
        return null;
      }
    })
    .filter((f) => Array.isArray(f) && f[1] === "o");
  // eslint-disable-next-line no-control-regex
  const clean = (t) => String(t).replace(/\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*(\x07|\x1b\\)|\r(?!\n)/g, "");
  const screen = h("pre", { class: "term", id: "terminal" });
  let timer = null;
  const stop = () => timer && clearTimeout(timer);
  teardown.push(stop);
  const play = () => {
    stop();
    screen.textContent = "";
    let i = 0;
    const step = () => {
      if (i >= frames.length) return;
      const [at, , data] = frames[i++];
      screen.append(document.createTextNode(clean(data)));
      screen.scrollTop = screen.scrollHeight;
      const next = frames[i];
      if (next) timer = setTimeout(step, Math.min(Math.max((next[0] - at) * 1000, 0), 1000));
    };
    step();
  };
  const all = () => {
    stop();
    screen.textContent = frames.map((f) => clean(f[2])).join("");
  };
  all();
  return h("div", { class: "card" },
    h("h3", {}, "Terminal"),
    h("p", {}, h("button", { type: "button", id: "play", onclick: play }, "▶ Play"), " ", h("button", { type: "button", onclick: all }, "Show all")),
    screen,
  );
}

// Policy playground: what the policy says for a principal, target and SQL.
async function playgroundPage() {
  const targets = await api("GET", "/api/v1/targets");
  const out = h("div", { id: "verdict" });
  const form = h("form", { id: "playground" },
    h("div", { class: "filters" },
      h("input", { name: "subject", placeholder: "subject", value: me.principal.subject, required: true, "aria-label": "subject" }),
      h("input", { name: "groups", placeholder: "groups, comma-separated", value: (me.principal.groups || []).join(","), "aria-label": "groups" }),
      h("select", { name: "target", "aria-label": "target" }, targets.targets.map((t) => h("option", { value: t.name }, `${t.name} (${t.kind})`))),
    ),
    h("textarea", { name: "sql", placeholder: "SELECT * FROM customers", required: true, "aria-label": "statement" }),
    h("p", {}, h("button", { class: "primary", type: "submit" }, "Ask the policy")),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const body = { subject: f.get("subject"), groups: String(f.get("groups")).split(",").map((g) => g.trim()).filter(Boolean), target: f.get("target"), sql: f.get("sql") };
    try {
      const d = await api("POST", "/api/v1/policy/test", body);
      out.replaceChildren(
        h("div", { class: "card" },
          h("h3", {}, badge(d.action, d.action), " ", d.rule ? h("code", {}, d.rule) : ""),
          h("p", {}, d.reason || ""),
          d.approvers?.length ? h("p", {}, `Approvers: ${d.approvers.join(", ")}${d.quorum > 1 ? ` (quorum ${d.quorum})` : ""}`) : null,
          d.masking ? h("p", {}, `Masked: ${[...(d.masking.columns || []), ...(d.masking.detectors || [])].join(", ")} (${d.masking.action})`) : null,
          (d.statements || []).length ? h("pre", { class: "cmd" }, JSON.stringify(d.statements, null, 2)) : null,
        ),
      );
    } catch (err) {
      out.replaceChildren(errorBox(err));
    }
  });
  show(h("h1", {}, "Policy playground"), h("p", { class: "muted" }, "Nothing runs: the policy service only says what it would decide."), form, out);
}

async function targetsPage() {
  const data = await api("GET", "/api/v1/targets");
  show(
    h("h1", {}, "Targets"),
    h("table", { id: "targets" },
      h("tr", {}, ["Name", "Kind", "Address", "Database", "Labels"].map((t) => h("th", {}, t))),
      data.targets.map((t) =>
        h("tr", {}, h("td", {}, t.name), h("td", {}, t.kind), h("td", {}, t.address), h("td", {}, t.database || ""), h("td", {}, Object.entries(t.labels || {}).map(([k, v]) => `${k}=${v}`).join(" "))),
      ),
    ),
  );
}

async function start() {
  try {
    me = await api("GET", "/api/v1/console/session");
  } catch (err) {
    if (err instanceof SignedOut) return signInPage();
    return show(errorBox(err));
  }
  const after = sessionStorage.getItem("sluice.after");
  if (after) {
    sessionStorage.removeItem("sluice.after");
    if (!location.hash) location.hash = after;
  }
  window.addEventListener("hashchange", route);
  route();
}

start();
