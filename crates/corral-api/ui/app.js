// The web UI's page: the instance list (refreshed when the event feed says something changed,
// never polled), create from an image, start/stop/delete, the console, usage graphs and the
// event feed. Every text from the server goes in through textContent, never as HTML.

import { act, call, instancePath, websocketUrl } from "./api.js";
import { openConsole } from "./console.js";
import { UsageGraphs } from "./metrics.js";

/** Events kept in the feed. */
const KEEP_EVENTS = 50;
/** The longest wait before reconnecting the event feed. */
const MAX_RECONNECT_MS = 30000;

const $ = (selector) => document.querySelector(selector);

// --- messages --------------------------------------------------------------------------------

/** Shows `text` as the page's one message line; `kind` is "info", "ok" or "error". */
function say(text, kind = "info") {
  const message = $("#message");
  message.textContent = text;
  message.className = kind;
  message.hidden = false;
}

// --- the instance list -----------------------------------------------------------------------

/** Actions under way, by instance name: their buttons stay disabled meanwhile. */
const busy = new Set();
let refreshing = null;
let refreshAgain = false;

/** Reads the list again; refreshes asked for while one runs are folded into one more. */
function refreshInstances() {
  if (refreshing) {
    refreshAgain = true;
    return refreshing;
  }
  refreshing = (async () => {
    try {
      renderInstances(await call("GET", "/1.0/instances"));
    } catch (err) {
      say(`cannot list the instances: ${err.message}`, "error");
    } finally {
      refreshing = null;
      if (refreshAgain) {
        refreshAgain = false;
        refreshInstances();
      }
    }
  })();
  return refreshing;
}

const ACTIVE = new Set(["starting", "running", "paused", "stopping"]);

function button(label, action, enabled) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.dataset.action = action;
  b.disabled = !enabled;
  return b;
}

function renderInstances(instances) {
  const rows = instances.map((instance) => {
    const row = document.createElement("tr");
    row.dataset.instance = instance.name;
    const cell = (className, text) => {
      const td = document.createElement("td");
      td.className = className;
      td.textContent = text;
      row.append(td);
      return td;
    };
    cell("name", instance.name);
    cell("type", instance.type);
    cell("status", instance.status).dataset.status = instance.status;
    cell("addresses", instance.ipv4.length ? instance.ipv4.join(", ") : "—");
    const idle = !busy.has(instance.name);
    const active = ACTIVE.has(instance.status);
    const actions = cell("actions", "");
    actions.append(
      button("Start", "start", idle && !active),
      button("Stop", "stop", idle && active),
      button("Console", "console", instance.status === "running"),
      button("Delete", "delete", idle),
    );
    return row;
  });
  $("#instances tbody").replaceChildren(...rows);
  $("#no-instances").hidden = instances.length > 0;
}

/** Runs `verb` (start, stop, delete) on instance `name`, saying how it went. */
async function instanceAction(name, verb) {
  if (verb === "delete" && !confirm(`Delete instance ${name}? Its disks and root filesystem go with it.`)) {
    return;
  }
  busy.add(name);
  refreshInstances();
  const doing = { start: "starting", stop: "stopping", delete: "deleting" }[verb];
  say(`${doing} instance ${name}…`);
  try {
    const operation =
      verb === "delete"
        ? await act("DELETE", instancePath(name))
        : await act("PUT", instancePath(name, "/state"), { action: verb });
    say(`${operation.description}: done`, "ok");
  } catch (err) {
    say(err.message, "error");
  } finally {
    busy.delete(name);
    refreshInstances();
  }
}

$("#instances").addEventListener("click", (event) => {
  const target = event.target.closest("button[data-action]");
  if (!target) return;
  const name = target.closest("tr").dataset.instance;
  if (target.dataset.action === "console") showConsole(name);
  else instanceAction(name, target.dataset.action);
});

// --- create ----------------------------------------------------------------------------------

async function loadImages() {
  const select = $("#create-image");
  let images;
  try {
    images = await call("GET", "/1.0/images");
  } catch (err) {
    say(`cannot list the images: ${err.message}`, "error");
    return;
  }
  const options = images.map((image) => {
    const option = document.createElement("option");
    // An alias is what a person typed; the fingerprint names an image that has none.
    option.value = image.aliases[0] ?? image.fingerprint;
    const about = [image.type, image.os, image.release, image.description].filter(Boolean);
    option.textContent = `${image.aliases[0] ?? image.fingerprint.slice(0, 12)} (${about.join(", ")})`;
    return option;
  });
  select.replaceChildren(...options);
  $("#no-images").hidden = images.length > 0;
  $("#create-submit").disabled = images.length === 0;
}

$("#create").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("#create-name").value.trim();
  const image = $("#create-image").value;
  const start = $("#create-start").checked;
  const submit = $("#create-submit");
  submit.disabled = true;
  say(`creating instance ${name} from ${image}…`);
  try {
    await act("POST", `/1.0/instances${start ? "?start=true" : ""}`, { name, image });
    say(`created instance ${name}${start ? " and started it" : ""}`, "ok");
    $("#create-name").value = "";
  } catch (err) {
    say(err.message, "error");
  } finally {
    submit.disabled = false;
    refreshInstances();
  }
});

// --- the console -----------------------------------------------------------------------------

let closeConsole = null;

function showConsole(name) {
  if (closeConsole) closeConsole();
  $("#console-name").textContent = name;
  $("#console-section").hidden = false;
  const state = $("#console-state");
  state.textContent = `attaching to ${name}…`;
  state.className = "muted";
  closeConsole = openConsole($("#console"), name, (text, isError) => {
    state.textContent = text;
    state.className = isError ? "error" : "muted";
  });
}

$("#console-close").addEventListener("click", () => {
  if (closeConsole) closeConsole();
  closeConsole = null;
  $("#console-section").hidden = true;
});

// --- the event feed --------------------------------------------------------------------------

function describe(message) {
  if (message.type === "lifecycle") {
    const e = message.event;
    const why = [e.reason, e.detail].filter(Boolean).join(": ");
    return {
      time: new Date(e.time_ms),
      text: `${e.instance} ${e.action}${why ? ` (${why})` : ""}${e.uid !== undefined ? ` by uid ${e.uid}` : ""}`,
    };
  }
  if (message.type === "logging") {
    const r = message.record;
    return { time: new Date(r.time_ms), text: `server ${r.level}: ${r.message}`, failed: r.level === "error" };
  }
  const o = message.operation;
  const p = o.status === "running" ? o.progress : undefined;
  const moved = p ? ` (${p.phase}${p.total ? ` ${Math.floor((100 * p.done) / p.total)}%` : ""})` : "";
  return {
    time: new Date(o.updated_at * 1000),
    text: `${o.description}: ${o.status}${moved}${o.error ? ` (${o.error})` : ""}`,
    failed: o.status === "failure",
  };
}

function addEvent(message) {
  const { time, text, failed } = describe(message);
  const item = document.createElement("li");
  item.dataset.type = message.type;
  if (failed) item.className = "error";
  const when = document.createElement("time");
  when.dateTime = time.toISOString();
  when.textContent = time.toLocaleTimeString();
  item.append(when, ` ${text}`);
  const list = $("#events");
  list.prepend(item);
  while (list.children.length > KEEP_EVENTS) list.lastElementChild.remove();
}

let reconnectMs = 1000;

function connectEvents() {
  const feedState = $("#feed-state");
  const socket = new WebSocket(websocketUrl("/1.0/events"));
  socket.onopen = () => {
    reconnectMs = 1000;
    feedState.textContent = "live";
    feedState.className = "ok";
    // What changed while the feed was away is read once, then events say the rest.
    refreshInstances();
  };
  socket.onmessage = (event) => {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    addEvent(message);
    const ended = message.type === "operation" && message.operation.status !== "running";
    if (message.type === "lifecycle" || ended) refreshInstances();
  };
  socket.onclose = (event) => {
    // A client too slow for the feed (1008) or a stopping server (1001) says why; either way the
    // list may be stale until the feed is back.
    const why = event.reason || `code ${event.code}`;
    feedState.textContent = `event feed lost (${why}); reconnecting in ${reconnectMs / 1000} s`;
    feedState.className = "error";
    setTimeout(connectEvents, reconnectMs);
    reconnectMs = Math.min(reconnectMs * 2, MAX_RECONNECT_MS);
  };
}

// --- start -----------------------------------------------------------------------------------

refreshInstances();
loadImages();
connectEvents();
new UsageGraphs($("#metrics")).start();
