// The admin API. The token lives in this module's memory only — never in
// localStorage, sessionStorage, a cookie or a URL — and goes out as
// `Authorization: Bearer` on each call, so no request is authorized by
// anything a browser sends on its own (no CSRF). Signing out, reloading or
// closing the tab forgets it.

let token = null;
let onUnauthorized = null;

/** An error the API answered (`status`, `code`, `message`), or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  toString() {
    return this.status ? `${this.status} ${this.code}: ${this.message}` : this.message;
  }
}

/** Keeps `t` for the calls that follow; `null` forgets it. */
export function setToken(t) {
  token = t;
}

/** `f(err)` runs when the API stops accepting the token (401). */
export function whenUnauthorized(f) {
  onUnauthorized = f;
}

function headers(extra) {
  return { authorization: `Bearer ${token}`, ...extra };
}

async function errorOf(resp) {
  let code = `http_${resp.status}`;
  let message = resp.statusText || 'the request failed';
  try {
    const body = await resp.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // Not JSON: the status says what there is to say.
  }
  return new ApiError(resp.status, code, message);
}

/** `path` with `params` as its query (empty values left out). */
export function withQuery(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

/**
 * Calls the API: `api(path)` GETs JSON; `{method, body}` sends JSON;
 * `{text: true}` answers the body as text (CSV). Throws an ApiError with the
 * API's own code and message.
 */
export async function api(path, { method = 'GET', body, text = false } = {}) {
  if (token === null) throw new ApiError(401, 'unauthorized', 'not signed in');
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers: headers(body === undefined ? {} : { 'content-type': 'application/json' }),
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (e) {
    throw new ApiError(0, 'network', `the gateway did not answer (${e.message})`);
  }
  if (!resp.ok) {
    const err = await errorOf(resp);
    if (resp.status === 401 && onUnauthorized) onUnauthorized(err);
    throw err;
  }
  return text ? resp.text() : resp.json();
}

/** First wait before reconnecting the change feed, and the longest. */
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30000;

/**
 * Follows `GET /admin/v1/changes` (server-sent events, read with fetch and
 * a stream reader: EventSource cannot send the Authorization header).
 * `onChange({customer_id, kind})` per event; `onState(state, detail)` with
 * `live`, `warn` (still live, but an event was unreadable: the error),
 * `retry` (detail: the error and the wait) or `off` (the API refused: the
 * error); `onReconnect()` after a reconnection, since changes
 * may have been missed meanwhile. Reconnects with exponential backoff and
 * jitter. Returns a function that stops it.
 */
export function follow({ onChange, onState, onReconnect }) {
  let stopped = false;
  let controller = null;
  let wait = RETRY_FIRST_MS;
  let connectedBefore = false;

  function dispatch(block) {
    const data = block
      .split('\n')
      .filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(5).replace(/^ /, ''))
      .join('\n');
    if (!data) return; // a comment: the heartbeat
    try {
      onChange(JSON.parse(data));
    } catch (e) {
      onState('warn', { error: new ApiError(0, 'bad_event', `an unreadable change event (${e.message})`) });
    }
  }

  async function once() {
    controller = new AbortController();
    let resp;
    try {
      resp = await fetch('/admin/v1/changes', {
        headers: headers({ accept: 'text/event-stream' }),
        cache: 'no-store',
        credentials: 'omit',
        signal: controller.signal,
      });
    } catch (e) {
      throw new ApiError(0, 'network', `the change feed is unreachable (${e.message})`);
    }
    if (!resp.ok) {
      const err = await errorOf(resp);
      err.final = resp.status === 401 || resp.status === 403;
      if (resp.status === 401 && onUnauthorized) onUnauthorized(err);
      throw err;
    }
    onState('live');
    wait = RETRY_FIRST_MS;
    if (connectedBefore && onReconnect) onReconnect();
    connectedBefore = true;
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (e) {
        throw new ApiError(0, 'network', `the change feed was cut (${e.message})`);
      }
      if (chunk.done) throw new ApiError(0, 'closed', 'the gateway closed the change feed');
      buffer += chunk.value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  }

  (async () => {
    while (!stopped) {
      try {
        await once();
      } catch (err) {
        if (stopped) return;
        if (err.final) {
          onState('off', { error: err });
          return;
        }
        const jittered = Math.round(wait * (0.75 + Math.random() * 0.5));
        onState('retry', { error: err, wait: jittered });
        await new Promise((r) => setTimeout(r, jittered));
        wait = Math.min(wait * 2, RETRY_MAX_MS);
      }
    }
  })();

  return () => {
    stopped = true;
    if (controller) controller.abort();
  };
}
