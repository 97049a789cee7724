// An instance's console in the browser: an xterm attached to GET /1.0/instances/NAME/console,
// whose binary messages are the console's bytes both ways.

import { Terminal } from "./vendor/xterm/xterm.mjs";
import { call, instancePath, websocketUrl } from "./api.js";

/**
 * Why the console's websocket was refused. A browser does not show a refused handshake's
 * answer, so the same path is asked again without the upgrade: an instance that is not running
 * says so; a running one answers 400 (it wants a websocket), so the refusal was the attach
 * itself, which takes one client at a time.
 */
async function whyRefused(name) {
  try {
    await call("GET", instancePath(name, "/console"));
  } catch (err) {
    if (err.status !== 400) return err.message;
  }
  return `cannot attach to the console of instance ${name}: another client may be attached (the console takes one at a time)`;
}

/**
 * Opens the console of instance `name` in `element`; `report(text, isError)` is told how it
 * goes. Returns a function that detaches and removes the terminal.
 */
export function openConsole(element, name, report) {
  const terminal = new Terminal({ cols: 80, rows: 24, cursorBlink: true, scrollback: 2000 });
  terminal.open(element);
  const socket = new WebSocket(websocketUrl(instancePath(name, "/console")));
  socket.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  let attached = false;
  let closedByUs = false;

  const send = (bytes) => {
    if (socket.readyState === WebSocket.OPEN) socket.send(bytes);
  };
  // Keystrokes as UTF-8; xterm's "binary" data (some mouse reports) is already bytes.
  terminal.onData((data) => send(encoder.encode(data)));
  terminal.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));

  socket.onopen = () => {
    attached = true;
    report(`attached to ${name}: what you type goes to its console`, false);
    terminal.focus();
  };
  socket.onmessage = (event) => {
    terminal.write(typeof event.data === "string" ? event.data : new Uint8Array(event.data));
  };
  socket.onclose = async (event) => {
    if (closedByUs) return;
    if (!attached) {
      report(await whyRefused(name), true);
    } else {
      const why = event.reason ? `: ${event.reason}` : " (the instance stopped, or the server went away)";
      report(`the console of ${name} closed${why}`, false);
    }
  };

  return () => {
    closedByUs = true;
    socket.close();
    terminal.dispose();
  };
}
