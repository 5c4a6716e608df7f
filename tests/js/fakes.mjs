// Test doubles for the browser client: a scriptable WebSocket and fetch, plus helpers.

export class FakeWebSocket extends EventTarget {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;
  /** Every socket created since the last reset(), oldest first. */
  static instances = [];

  static reset() {
    FakeWebSocket.instances = [];
  }

  static get last() {
    return FakeWebSocket.instances.at(-1);
  }

  constructor(url, protocols) {
    super();
    this.url = url;
    this.protocols = protocols;
    this.readyState = FakeWebSocket.CONNECTING;
    this.sent = [];
    this.closedWith = null;
    FakeWebSocket.instances.push(this);
  }

  /** The connection token, wherever the client put it (subprotocol or query string). */
  get token() {
    const offered = this.protocols === undefined ? [] : [].concat(this.protocols);
    const carried = offered.find((p) => p.startsWith('apigw-ws.token.'));
    return carried ? carried.slice('apigw-ws.token.'.length) : (this.query.ws_token ?? null);
  }

  get query() {
    return Object.fromEntries(new URL(this.url).searchParams);
  }

  /** Parsed JSON of every frame the client sent. */
  get sentJSON() {
    return this.sent.map((text) => JSON.parse(text));
  }

  send(text) {
    if (this.readyState !== FakeWebSocket.OPEN) throw new Error('InvalidStateError: not open');
    this.sent.push(text);
  }

  close(code = 1005, reason = '') {
    if (this.readyState >= FakeWebSocket.CLOSING) return;
    this.closedWith = { code, reason };
    this.readyState = FakeWebSocket.CLOSING;
    queueMicrotask(() => this._closed(code, reason, true));
  }

  // --- what the server side does -----------------------------------------------------

  serverOpen() {
    this.readyState = FakeWebSocket.OPEN;
    this.dispatchEvent(new Event('open'));
  }

  serverSend(data) {
    const text = typeof data === 'string' ? data : JSON.stringify(data);
    this.dispatchEvent(new MessageEvent('message', { data: text }));
  }

  /** The server (or API Gateway) closes an open connection. */
  serverClose(code = 1001, reason = 'Going away') {
    this._closed(code, reason, true);
  }

  /** The handshake is refused or the network fails: error, then close 1006. */
  fail() {
    this.dispatchEvent(new Event('error'));
    this._closed(1006, '', false);
  }

  _closed(code, reason, wasClean) {
    if (this.readyState === FakeWebSocket.CLOSED) return;
    this.readyState = FakeWebSocket.CLOSED;
    this.dispatchEvent(Object.assign(new Event('close'), { code, reason, wasClean }));
  }
}

/**
 * A fetch double. `respond(url, init, callIndex)` returns a Response (or throws); by default
 * each call gets `{"token": "tok-N"}` with N counting from 1.
 */
export function fakeFetch(respond) {
  const calls = [];
  const fetch = async (url, init = {}) => {
    calls.push({ url: new URL(url), init });
    if (init.signal && init.signal.aborted) throw new DOMException('aborted', 'AbortError');
    const n = calls.length;
    if (respond) return respond(new URL(url), init, n);
    return json({ token: `tok-${n}`, expires_in: 60 });
  };
  fetch.calls = calls;
  return fetch;
}

/** A JSON Response. */
export function json(body, status = 200, headers = {}) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json', ...headers },
  });
}

/** Let pending promises and queued microtasks run (fetch, JSON parsing, event dispatch). */
export async function flush(rounds = 5) {
  for (let i = 0; i < rounds; i += 1) {
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** Record every event of the given types: [{type, detail}]. */
export function record(client, types) {
  const seen = [];
  for (const type of types) client.on(type, (detail) => seen.push({ type, detail }));
  seen.of = (type) => seen.filter((e) => e.type === type).map((e) => e.detail);
  return seen;
}
