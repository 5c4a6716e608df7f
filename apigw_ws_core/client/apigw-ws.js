/**
 * apigw-ws browser client: one WebSocket to an AWS API Gateway WebSocket API (or the local
 * gateway), kept alive for as long as the page wants it.
 *
 * - fetches a fresh single-use token before every connect and reconnect;
 * - reconnects with exponential backoff and jitter;
 * - sends a small keepalive message before API Gateway's 10-minute idle timeout;
 * - replaces the connection before API Gateway's 2-hour maximum, and reconnects after any drop;
 * - queues sends while (re)connecting and flushes them in order once open;
 * - sends `{"action": ..., ...}` JSON and emits events named after each incoming message's `type`.
 *
 * Plain ES module, no dependencies, no build step. Types: apigw-ws.d.ts beside this file.
 *
 * @module apigw-ws
 */

export const VERSION = '0.1.0';

/** API Gateway closes a connection that has been idle for 10 minutes. */
export const API_GATEWAY_IDLE_TIMEOUT_MS = 10 * 60 * 1000;
/** API Gateway closes every connection after 2 hours. */
export const API_GATEWAY_MAX_CONNECTION_MS = 2 * 60 * 60 * 1000;
/** API Gateway's largest message (128 KiB); larger ones close the connection with 1009. */
export const MAX_MESSAGE_BYTES = 128 * 1024;

/** Default options; every one can be overridden per client. */
export const DEFAULTS = Object.freeze({
  channel: null,
  params: {},
  protocols: undefined,
  tokenParam: 'ws_token',
  channelParam: 'channel',
  tokenRequest: {},
  csrfToken: undefined,
  csrfHeader: 'X-CSRFToken',
  actionKey: 'action',
  typeKey: 'type',
  reconnect: true,
  maxRetries: Infinity,
  backoff: Object.freeze({ initialDelay: 500, maxDelay: 30000, factor: 2, jitter: 0.5 }),
  stableAfter: 10000,
  keepaliveInterval: 5 * 60 * 1000,
  keepaliveMessage: Object.freeze({ action: 'ping' }),
  maxConnectionAge: API_GATEWAY_MAX_CONNECTION_MS - 60 * 1000,
  maxQueue: 100,
  reconnectOnOnline: true,
});

/** Connection states, in the order a client usually goes through them. */
export const State = Object.freeze({
  IDLE: 'idle',
  CONNECTING: 'connecting',
  OPEN: 'open',
  RECONNECTING: 'reconnecting',
  CLOSED: 'closed',
});

const WS_OPEN = 1;

/** The token endpoint refused (HTTP status in `status`, the server's error code in `code`). */
export class TokenError extends Error {
  constructor(message, { status = 0, code = 'token_error', retryAfter = null } = {}) {
    super(message);
    this.name = 'TokenError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  /** 401 and 403 mean "not allowed": retrying will not help. */
  get denied() {
    return this.status === 401 || this.status === 403;
  }
}

/**
 * Delay before reconnect attempt `attempt` (1, 2, ...): exponential growth capped at
 * `maxDelay`, then up to `jitter` of it taken away at random so that many clients dropped at
 * once do not come back at the same moment. `jitter: 1` is "full jitter", `0` none.
 *
 * @param {number} attempt
 * @param {{initialDelay?: number, maxDelay?: number, factor?: number, jitter?: number}} [options]
 * @param {() => number} [random]
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
  const { initialDelay, maxDelay, factor, jitter } = { ...DEFAULTS.backoff, ...options };
  const exponent = Math.max(0, attempt - 1);
  const base = Math.min(maxDelay, initialDelay * factor ** exponent);
  const spread = Math.min(1, Math.max(0, jitter));
  return Math.round(base * (1 - spread * random()));
}

/** UTF-8 length of a string. */
function byteLength(text) {
  return new TextEncoder().encode(text).length;
}

/** A ws:// or wss:// URL for `base`, resolved against the page for relative paths. */
export function websocketUrl(base, query = {}) {
  const origin = globalThis.location ? globalThis.location.href : undefined;
  const url = new URL(String(base), origin);
  if (url.protocol === 'http:') url.protocol = 'ws:';
  else if (url.protocol === 'https:') url.protocol = 'wss:';
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
  }
  return url.toString();
}

function parseRetryAfter(value) {
  if (!value) return null;
  const seconds = Number(value);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : null;
}

function readCookie(name) {
  const doc = globalThis.document;
  if (!doc || typeof doc.cookie !== 'string') return null;
  for (const part of doc.cookie.split(';')) {
    const [key, ...rest] = part.trim().split('=');
    if (key === name) return decodeURIComponent(rest.join('='));
  }
  return null;
}

/**
 * The CSRF token to send with a POST to the token endpoint: the `csrfToken` option (a string
 * or a function), else `<meta name="csrf-token" content="...">` on the page, else Django's
 * `csrftoken` cookie.
 */
function csrfToken(option) {
  if (typeof option === 'function') return option() || null;
  if (typeof option === 'string') return option;
  if (option === null) return null;
  const doc = globalThis.document;
  const meta = doc && typeof doc.querySelector === 'function' ? doc.querySelector('meta[name="csrf-token"]') : null;
  const content = meta && meta.getAttribute('content');
  return content || readCookie('csrftoken');
}

function normalizeToken(result) {
  if (typeof result === 'string' && result) return { token: result };
  if (result && typeof result === 'object') {
    const token = result.token ?? result.ws_token;
    if (typeof token === 'string' && token) {
      return { token, url: result.url ?? result.ws_url ?? undefined };
    }
  }
  throw new TokenError('the token endpoint answered without a token', { code: 'bad_token_response' });
}

/**
 * The client. Create it with options, call `connect()`, listen with `on()` / `onMessage()`,
 * send with `send()`; `close()` when done.
 */
export class ApigwWsClient extends EventTarget {
  /**
   * @param {import('./apigw-ws').ClientOptions} options
   */
  constructor(options = {}) {
    super();
    if (!options.url && !options.tokenUrl && !options.getToken) {
      throw new TypeError('apigw-ws: give `url`, `tokenUrl` or `getToken`');
    }
    this.options = {
      ...DEFAULTS,
      ...options,
      backoff: { ...DEFAULTS.backoff, ...(options.backoff || {}) },
    };
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    this._fetch = options.fetch || ((...args) => globalThis.fetch(...args));
    this._random = options.random || Math.random;
    if (!this._WebSocket) throw new TypeError('apigw-ws: no WebSocket implementation available');
    this._channel = this.options.channel ?? null;
    this._state = State.IDLE;
    this._ws = null;
    this._attempt = 0;
    this._generation = 0;
    this._queue = [];
    this._timers = { retry: null, keepalive: null, maxAge: null, stable: null };
    this._abort = null;
    this._opened = null;
    this._everOpened = false;
    this._onOnline = () => {
      if (this._state === State.RECONNECTING && this._timers.retry !== null) {
        this._clearTimer('retry');
        this._openSocket();
      }
    };
  }

  /** Current state: idle, connecting, open, reconnecting or closed. */
  get state() {
    return this._state;
  }

  /** The channel the next (or current) connection joins; `null` for the server's default. */
  get channel() {
    return this._channel;
  }

  /** Messages waiting for the connection to open. */
  get queued() {
    return this._queue.length;
  }

  /** Reconnect attempts since the connection was last stable (0 while healthy). */
  get attempt() {
    return this._attempt;
  }

  /**
   * Start connecting. Resolves when the connection is open; rejects if the token endpoint
   * denies access (a `TokenError` with `denied` true) or `close()` is called first.
   * Calling it again while connecting or open returns the same promise.
   *
   * @returns {Promise<void>}
   */
  connect() {
    if (this._state === State.CLOSED) {
      this._queue = [];
    }
    if (this._state !== State.IDLE && this._state !== State.CLOSED) {
      return this._opened ? this._opened.promise : Promise.resolve();
    }
    this._attempt = 0;
    this._everOpened = false;
    this._newOpenedPromise();
    if (this.options.reconnectOnOnline && typeof globalThis.addEventListener === 'function') {
      globalThis.addEventListener('online', this._onOnline);
    }
    this._setState(State.CONNECTING);
    this._openSocket();
    return this._opened.promise;
  }

  /**
   * Send `{[actionKey]: action, ...data}` as JSON. Sent now if open, else queued (oldest
   * dropped past `maxQueue`, with an `error` event). Returns `true` if sent now.
   *
   * @param {string} action
   * @param {object} [data]
   */
  send(action, data = {}) {
    if (typeof action !== 'string' || !action) throw new TypeError('apigw-ws: action must be a non-empty string');
    return this.sendJSON({ ...data, [this.options.actionKey]: action });
  }

  /** Send any JSON-serialisable value (queued like `send`). */
  sendJSON(value) {
    return this.sendRaw(JSON.stringify(value));
  }

  /** Send a string as it is (queued like `send`). Throws if it exceeds 128 KiB. */
  sendRaw(text) {
    if (this._state === State.CLOSED || this._state === State.IDLE) {
      throw new Error(`apigw-ws: cannot send while ${this._state}; call connect() first`);
    }
    if (byteLength(text) > MAX_MESSAGE_BYTES) {
      throw new RangeError(`apigw-ws: message exceeds API Gateway's ${MAX_MESSAGE_BYTES} bytes`);
    }
    if (this._state === State.OPEN && this._ws && this._ws.readyState === WS_OPEN) {
      this._write(text);
      return true;
    }
    this._queue.push(text);
    if (this._queue.length > this.options.maxQueue) {
      const dropped = this._queue.shift();
      this._emit('error', { kind: 'queue_full', message: 'send queue full; oldest message dropped', dropped });
    }
    return false;
  }

  /**
   * Move to another channel: close the current connection and connect again with a fresh
   * token for `channel`, without backoff. Queued messages go to the new connection.
   */
  setChannel(channel) {
    this._channel = channel ?? null;
    if (this._state === State.IDLE || this._state === State.CLOSED) return this.connect();
    return this.reconnect('channel_changed');
  }

  /**
   * Drop the current connection (if any) and connect again now, with a fresh token and no
   * backoff. Queued messages go to the new connection. Emits `reconnecting` with `reason`.
   */
  reconnect(reason = 'manual') {
    if (this._state === State.IDLE || this._state === State.CLOSED) return this.connect();
    this._attempt = 0;
    this._retire(1000, reason);
    if (!this._opened || this._opened.settled) this._newOpenedPromise();
    this._setState(State.RECONNECTING);
    this._emit('reconnecting', { attempt: 0, delay: 0, reason });
    this._openSocket();
    return this._opened.promise;
  }

  /** Close for good (until `connect()` is called again). Pending sends are discarded. */
  close(code = 1000, reason = 'client closed') {
    if (this._state === State.CLOSED) return;
    const wasIdle = this._state === State.IDLE;
    const opened = this._state === State.OPEN;
    this._shutdown(code, reason, new Error('apigw-ws: closed before the connection opened'));
    if (!wasIdle) this._emit('close', { code, reason, wasClean: true, willReconnect: false, opened });
  }

  /**
   * Listen to a client event (`open`, `close`, `reconnecting`, `message`, `error`, `denied`,
   * `statechange`). The listener gets the event's detail. Returns a function that removes it.
   */
  on(type, listener) {
    const wrapped = (event) => listener(event.detail, event);
    this.addEventListener(type, wrapped);
    return () => this.removeEventListener(type, wrapped);
  }

  /**
   * Listen to incoming messages whose `type` field (see `typeKey`) equals `type`. The listener
   * gets the parsed message. Returns a function that removes it.
   */
  onMessage(type, listener) {
    return this.on(`message:${type}`, listener);
  }

  /** A promise of the next event of `type` (its detail). */
  once(type) {
    return new Promise((resolve) => {
      this.addEventListener(type, (event) => resolve(event.detail), { once: true });
    });
  }

  // --- internals --------------------------------------------------------------------

  /** Stop everything and settle a pending `connect()` promise with `error`. */
  _shutdown(code, reason, error) {
    this._retire(code, reason);
    this._queue = [];
    if (typeof globalThis.removeEventListener === 'function') {
      globalThis.removeEventListener('online', this._onOnline);
    }
    this._setState(State.CLOSED);
    if (this._opened && !this._opened.settled) this._opened.reject(error);
  }

  _newOpenedPromise() {
    const opened = { settled: false };
    opened.promise = new Promise((resolve, reject) => {
      opened.resolve = (value) => {
        opened.settled = true;
        resolve(value);
      };
      opened.reject = (error) => {
        opened.settled = true;
        reject(error);
      };
    });
    // Callers who never await connect() must not see "unhandled rejection" noise.
    opened.promise.catch(() => {});
    this._opened = opened;
  }

  _setState(state) {
    if (state === this._state) return;
    const previous = this._state;
    this._state = state;
    this._emit('statechange', { state, previous });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _clearTimer(name) {
    if (this._timers[name] !== null) {
      clearTimeout(this._timers[name]);
      this._timers[name] = null;
    }
  }

  _clearAllTimers() {
    for (const name of Object.keys(this._timers)) this._clearTimer(name);
  }

  /** Forget the current socket and any attempt in flight; close the socket if open. */
  _retire(code, reason) {
    this._generation += 1;
    this._clearAllTimers();
    if (this._abort) {
      this._abort.abort();
      this._abort = null;
    }
    const ws = this._ws;
    this._ws = null;
    if (ws && ws.readyState <= WS_OPEN) {
      try {
        ws.close(code, reason);
      } catch {
        // closing a socket that is still connecting may throw in some engines
      }
    }
  }

  async _fetchToken(signal) {
    const { getToken, tokenUrl, tokenRequest } = this.options;
    const channel = this._channel;
    if (getToken) return normalizeToken(await getToken({ channel, attempt: this._attempt, signal }));
    if (!tokenUrl) return null;
    const origin = globalThis.location ? globalThis.location.href : undefined;
    const url = new URL(tokenUrl, origin);
    const method = (tokenRequest.method || 'POST').toUpperCase();
    const headers = { Accept: 'application/json' };
    let payload;
    if (method === 'GET' || method === 'HEAD') {
      if (channel !== null) url.searchParams.set(this.options.channelParam, channel);
    } else {
      headers['Content-Type'] = 'application/json';
      payload = JSON.stringify(channel === null ? {} : { [this.options.channelParam]: channel });
      const csrf = csrfToken(this.options.csrfToken);
      if (csrf) headers[this.options.csrfHeader] = csrf;
    }
    const init = {
      credentials: 'same-origin',
      cache: 'no-store',
      body: payload,
      ...tokenRequest,
      method,
      headers: { ...headers, ...(tokenRequest.headers || {}) },
      signal,
    };
    const response = await this._fetch(url.toString(), init);
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      const code = (body && (body.error || body.code)) || `http_${response.status}`;
      const message = (body && body.message) || `token endpoint answered ${response.status}`;
      const retryAfter = parseRetryAfter(response.headers && response.headers.get('Retry-After'));
      throw new TokenError(message, { status: response.status, code, retryAfter });
    }
    return normalizeToken(body);
  }

  async _openSocket() {
    const generation = ++this._generation;
    const abort = typeof AbortController === 'function' ? new AbortController() : null;
    this._abort = abort;
    let token = null;
    try {
      token = await this._fetchToken(abort ? abort.signal : undefined);
    } catch (error) {
      if (generation !== this._generation) return;
      this._abort = null;
      this._tokenFailed(error);
      return;
    }
    if (generation !== this._generation) return;
    this._abort = null;
    const base = this.options.url || (token && token.url);
    if (!base) {
      const message = 'no WebSocket URL: set `url` or return `url` from the token endpoint';
      this._emit('error', { kind: 'config', message });
      this.close(1000, 'no url');
      return;
    }
    const query = { ...this.options.params };
    if (this._channel !== null) query[this.options.channelParam] = this._channel;
    if (token) query[this.options.tokenParam] = token.token;
    let ws;
    try {
      ws = new this._WebSocket(websocketUrl(base, query), this.options.protocols);
    } catch (error) {
      this._emit('error', { kind: 'socket', message: String(error && error.message), error });
      this._scheduleReconnect('socket_error');
      return;
    }
    this._ws = ws;
    let opened = false;
    ws.addEventListener('open', () => {
      if (ws !== this._ws) return;
      opened = true;
      this._onOpen();
    });
    ws.addEventListener('message', (event) => {
      if (ws !== this._ws) return;
      this._onMessage(event.data);
    });
    ws.addEventListener('error', () => {
      if (ws !== this._ws) return;
      this._emit('error', { kind: 'socket', message: opened ? 'connection error' : 'connection refused or failed' });
    });
    ws.addEventListener('close', (event) => {
      if (ws !== this._ws) return;
      this._ws = null;
      this._onClose(event, opened);
    });
  }

  _tokenFailed(error) {
    if (error instanceof TokenError && error.denied) {
      this._shutdown(1000, 'denied', error);
      this._emit('denied', {
        status: error.status,
        code: error.code,
        message: error.message,
        channel: this._channel,
      });
      return;
    }
    this._emit('error', {
      kind: 'token',
      status: error && error.status,
      code: error && error.code,
      message: String((error && error.message) || error),
      error,
    });
    const retryAfter = error instanceof TokenError ? error.retryAfter : null;
    this._scheduleReconnect('token_failed', retryAfter || 0);
  }

  _onOpen() {
    const reconnected = this._everOpened;
    this._everOpened = true;
    this._setState(State.OPEN);
    const { stableAfter, maxConnectionAge } = this.options;
    this._clearTimer('stable');
    if (stableAfter > 0) {
      this._timers.stable = setTimeout(() => {
        this._timers.stable = null;
        this._attempt = 0;
      }, stableAfter);
    } else {
      this._attempt = 0;
    }
    if (maxConnectionAge > 0 && Number.isFinite(maxConnectionAge)) {
      this._timers.maxAge = setTimeout(() => {
        this._timers.maxAge = null;
        this.reconnect('max_age');
      }, maxConnectionAge);
    }
    this._armKeepalive();
    const pending = this._queue;
    this._queue = [];
    for (const text of pending) this._write(text);
    if (this._opened && !this._opened.settled) this._opened.resolve();
    this._emit('open', { channel: this._channel, reconnected });
  }

  _onMessage(raw) {
    let data = raw;
    if (typeof raw === 'string') {
      try {
        data = JSON.parse(raw);
      } catch {
        data = raw;
      }
    }
    this._emit('message', data);
    if (!data || typeof data !== 'object' || Array.isArray(data)) return;
    const type = data[this.options.typeKey];
    if (typeof type === 'string' && type) {
      this._emit(`message:${type}`, data);
    } else if (typeof data.error === 'string') {
      // The backend's error reply: {"error": code, "message": text}.
      this._emit('error', { kind: 'server', code: data.error, message: String(data.message || data.error), data });
    } else if (typeof data.message === 'string' && 'connectionId' in data) {
      // API Gateway's own error frame, e.g. {"message": "Internal server error", ...}.
      this._emit('error', { kind: 'gateway', code: 'gateway_error', message: data.message, data });
    }
  }

  _onClose(event, opened) {
    this._clearAllTimers();
    const code = event && typeof event.code === 'number' ? event.code : 1006;
    const reason = (event && event.reason) || '';
    const willReconnect = this.options.reconnect && this._attempt < this.options.maxRetries;
    const wasClean = Boolean(event && event.wasClean);
    if (!willReconnect) {
      this._shutdown(code, reason, new Error(`apigw-ws: connection closed (${code})`));
    }
    this._emit('close', { code, reason, wasClean, willReconnect, opened });
    if (willReconnect) this._scheduleReconnect(opened ? 'closed' : 'handshake_failed');
  }

  _scheduleReconnect(reason, minDelay = 0) {
    if (this._state === State.CLOSED) return; // a listener called close()
    if (!this.options.reconnect || this._attempt >= this.options.maxRetries) {
      this._emit('error', { kind: 'retries_exhausted', message: `gave up after ${this._attempt} attempts` });
      this.close(1000, 'retries exhausted');
      return;
    }
    this._attempt += 1;
    const delay = Math.max(minDelay, backoffDelay(this._attempt, this.options.backoff, this._random));
    this._setState(State.RECONNECTING);
    this._emit('reconnecting', { attempt: this._attempt, delay, reason });
    this._clearTimer('retry');
    this._timers.retry = setTimeout(() => {
      this._timers.retry = null;
      this._openSocket();
    }, delay);
  }

  _write(text) {
    this._ws.send(text);
    this._armKeepalive();
  }

  _armKeepalive() {
    this._clearTimer('keepalive');
    const { keepaliveInterval, keepaliveMessage } = this.options;
    if (!keepaliveMessage || !(keepaliveInterval > 0)) return;
    this._timers.keepalive = setTimeout(() => {
      this._timers.keepalive = null;
      if (this._state === State.OPEN && this._ws && this._ws.readyState === WS_OPEN) {
        const text = typeof keepaliveMessage === 'string' ? keepaliveMessage : JSON.stringify(keepaliveMessage);
        this._write(text);
      }
    }, keepaliveInterval);
  }
}

/** Create a client and start connecting: `const ws = connect({tokenUrl: '/ws/token/'})`. */
export function connect(options) {
  const client = new ApigwWsClient(options);
  client.connect();
  return client;
}

export default ApigwWsClient;
