// The API as the page calls it: JSON requests whose failures become the API's own sentence
// (docs/api.md, "Errors"), and actions that answer with an operation waited on to its end.

/** A failure whose message is a sentence to show as it is; `status` is the HTTP status, if any. */
export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function request(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(`cannot reach corral serve: ${err.message}`);
  }
  const text = await response.text();
  if (!response.ok) {
    let sentence;
    try {
      sentence = JSON.parse(text).error;
    } catch {
      // Not the API's JSON (a proxy's page, say): show what came.
    }
    if (typeof sentence !== "string") {
      sentence = `corral serve answered ${method} ${path} with ${response.status}: ${text.slice(0, 200)}`;
    }
    throw new ApiError(sentence, response.status);
  }
  return text;
}

/** `method path` with an optional JSON body; the answer's JSON. */
export async function call(method, path, body) {
  const text = await request(method, path, body);
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(`corral serve answered ${method} ${path} with something other than JSON`);
  }
}

/** `GET path`'s text (the metrics). */
export function getText(path) {
  return request("GET", path);
}

/**
 * Runs an action that answers 202 with an operation and waits for its end: the ended operation
 * when it succeeded, else an ApiError with the operation's sentence.
 */
export async function act(method, path, body) {
  let operation = await call(method, path, body);
  while (operation.status === "running") {
    const id = encodeURIComponent(operation.id);
    const before = Date.now();
    operation = await call("GET", `/1.0/operations/${id}/wait?timeout=60`);
    // A stopping server answers a wait at once; do not spin on it.
    if (operation.status === "running" && Date.now() - before < 1000) await sleep(1000);
  }
  if (operation.status !== "success") {
    throw new ApiError(operation.error || `${operation.description} failed`, operation.error_code);
  }
  return operation;
}

/** The path of instance `name` (and `rest` under it). */
export function instancePath(name, rest = "") {
  return `/1.0/instances/${encodeURIComponent(name)}${rest}`;
}

/** The websocket URL of `path` on the server that served the page. */
export function websocketUrl(path) {
  const url = new URL(path, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}
