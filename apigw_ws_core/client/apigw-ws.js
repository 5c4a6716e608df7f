/**
 * apigw-ws browser client: one WebSocket to an AWS API Gateway WebSocket API (or the local
 * gateway), kept alive for as long as the page wants it.
 *
 * - fetches a fresh single-use token before every connect and reconnect;
 * - reconnects with exponential backoff and jitter;
 * - sends a small keepalive message before API Gateway's 10-minute idle timeout;
 * - replaces the connection before API Gateway's 2-hour maximum, and reconnects after any drop;
 * - queues sends while (re)connecting and flushes them in order once open;
 * - sends `{"action": ..., ...}` JSON and emits events named after each incoming message's `type`;
 * - on history channels, tracks each channel's offset, drops duplicates, detects gaps and asks
 *   the server for what it missed (`$recover`) after every reconnect, so the page sees every
 *   message once and in order (a `$skip` frame marks the offset of the page's own message,
 *   which the server did not echo back).
 *
 * Plain ES module, no dependencies, no build step. This file is the only source: the TypeScript
 * declarations of the npm package (`apigw-ws-client`) are generated from the JSDoc below.
 *
 * @module apigw-ws
 */

/** @typedef {'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'} ConnectionState */

/**
 * What a token endpoint (or `getToken`) returns. A bare string is taken as the token.
 *
 * @typedef {object} TokenResult
 * @property {string} token The single-use connection token.
 * @property {string} [url] WebSocket URL to use when the client has no `url` option.
 * @property {number} [expires_in] Seconds the token stays valid.
 */

/**
 * What `getToken` is called with.
 *
 * @typedef {object} TokenRequestContext
 * @property {string | null} channel The channel the connection is for (`null`: the server's default).
 * @property {number} attempt Reconnect attempt number (0 for a first or deliberate connect).
 * @property {AbortSignal} [signal] Aborted when the client closes or reconnects before the token arrives.
 */

/**
 * @typedef {object} BackoffOptions
 * @property {number} [initialDelay] Delay before the first retry, in ms (default 500).
 * @property {number} [maxDelay] Cap on the delay, in ms (default 30000).
 * @property {number} [factor] Growth per attempt (default 2).
 * @property {number} [jitter] Share of the delay taken away at random: 0 none, 1 "full jitter" (default 0.5).
 */

/**
 * Options of {@link ApigwWsClient}. Give `url`, `tokenUrl` or `getToken`.
 *
 * @typedef {object} ClientOptions
 * @property {string} [url] WebSocket endpoint (wss://…/stage, or http(s) and relative URLs, converted).
 * @property {string} [tokenUrl] Endpoint returning `{token, url?}` as JSON; called before every connect.
 * @property {RequestInit} [tokenRequest] Extra `fetch` options for `tokenUrl`. The default is a POST
 *   with the JSON body `{"channel": ...}`; with `method: 'GET'` the channel goes in the query string.
 * @property {string | (() => string | null | undefined) | null} [csrfToken] CSRF token sent with the
 *   POST (string or function). Default: the page's `<meta name="csrf-token">`, else Django's
 *   `csrftoken` cookie. `null` sends none.
 * @property {string} [csrfHeader] Header carrying the CSRF token (default `X-CSRFToken`, which
 *   Django and Flask-WTF read).
 * @property {(context: TokenRequestContext) => Promise<string | TokenResult> | string | TokenResult} [getToken]
 *   Fetch a token yourself; throw a `TokenError` with status 401/403 to deny.
 * @property {string | null} [channel] Channel to join at connect (`?channel=`).
 * @property {Record<string, string | number | boolean | null | undefined>} [params] Extra query
 *   parameters on the WebSocket URL.
 * @property {string | string[]} [protocols] WebSocket subprotocols (default: `apigw-ws` when the
 *   token travels as a subprotocol). The server selects the first one.
 * @property {'protocol' | 'query'} [tokenIn] Where the token travels (default `protocol`): as the
 *   subprotocol `apigw-ws.token.<token>` offered after `protocols`, which keeps it out of URLs and
 *   so out of access logs; or in the query string (`tokenParam`). A token that is not a valid
 *   subprotocol (only letters, digits and ``!#$%&'*+-.^_`|~``) goes in the query string.
 * @property {string} [tokenProtocolPrefix] Prefix of the token subprotocol (default
 *   `apigw-ws.token.`, the server's `token_subprotocol_prefix`).
 * @property {string} [tokenParam] Query parameter carrying the token (default `ws_token`).
 * @property {string} [channelParam] Query parameter carrying the channel (default `channel`).
 * @property {string} [actionKey] Key naming the handler in sent messages (default `action`).
 * @property {string} [typeKey] Key naming the type of incoming messages (default `type`).
 * @property {boolean} [reconnect] Reconnect after drops (default true).
 * @property {number} [maxRetries] Give up after this many failed attempts in a row (default Infinity).
 * @property {BackoffOptions} [backoff] Reconnect delays.
 * @property {number} [stableAfter] A connection open this long (ms) resets the backoff (default 10000).
 * @property {number} [keepaliveInterval] Send `keepaliveMessage` after this long without sending
 *   (ms, default 300000; 0 disables).
 * @property {object | string | null} [keepaliveMessage] Keepalive frame (default
 *   `{"action": "ping"}`; `null` disables).
 * @property {number} [maxConnectionAge] Replace the connection after this long (ms, default 2 h
 *   minus 1 min; 0 disables).
 * @property {number} [maxQueue] Messages kept while reconnecting (default 100; the oldest is dropped beyond).
 * @property {boolean} [reconnectOnOnline] Retry at once when the browser comes back online (default true).
 * @property {typeof WebSocket} [WebSocket] WebSocket implementation to use instead of the global one.
 * @property {typeof fetch} [fetch] `fetch` implementation to use instead of the global one.
 * @property {() => number} [random] Random source in [0, 1) for the jitter (tests).
 * @property {boolean} [history] Track history-channel envelopes (`{channel, offset, epoch, data}`):
 *   deliver each `data` once and in offset order, and recover missed messages after every
 *   (re)connect and on gaps (default true). Set false for servers without history channels.
 * @property {Record<string, HistoryPosition>} [positions] Positions to start from (e.g. saved
 *   in `sessionStorage` by an earlier page: see `positions`), so a reload recovers too.
 * @property {number} [gapWait] How long (ms) an out-of-order message waits for the missing ones
 *   before the client asks the server for them (default 300).
 * @property {number} [recoverTimeout] How long (ms) to wait for a `$recover` answer before
 *   delivering what arrived and reporting an error (default 10000).
 */

/**
 * Where a client stands in a history channel: the epoch and the last offset delivered.
 *
 * @typedef {object} HistoryPosition
 * @property {string} epoch The channel's epoch (changes when its history is reset).
 * @property {number} offset The last offset delivered (0: none yet).
 */

/**
 * @typedef {object} RecoveredDetail
 * @property {string} channel The history channel.
 * @property {boolean} recovered False when the history no longer reaches back: reload the
 *   channel's state from the server (the client continues from the current position).
 * @property {string} [reason] Why not: `epoch_changed` (history reset) or `history_expired`.
 * @property {number} count Messages delivered by this recovery.
 */

/**
 * Any message the server sends with a string `type`.
 *
 * @typedef {{type: string, [key: string]: unknown}} IncomingMessage
 */

/**
 * @typedef {object} OpenDetail
 * @property {string | null} channel The channel joined.
 * @property {boolean} reconnected True when this is not the first connection since `connect()`.
 */

/**
 * @typedef {object} CloseDetail
 * @property {number} code WebSocket close code.
 * @property {string} reason Close reason.
 * @property {boolean} wasClean Whether the close handshake completed.
 * @property {boolean} willReconnect Whether the client will try again (false after `close()`, a
 *   denial or exhausted retries).
 * @property {boolean} opened Whether the connection had opened (false: the handshake failed or was refused).
 */

/**
 * @typedef {object} ReconnectingDetail
 * @property {number} attempt Attempt number (0 for a deliberate reconnect).
 * @property {number} delay Milliseconds before the attempt.
 * @property {'closed' | 'handshake_failed' | 'token_failed' | 'socket_error' | 'max_age' | 'channel_changed' | (string & {})} reason
 *   Why the client reconnects.
 */

/**
 * @typedef {object} DeniedDetail
 * @property {number} status HTTP status of the token endpoint (401 or 403).
 * @property {string} code The server's error code.
 * @property {string} message The server's message.
 * @property {string | null} channel The channel that was refused.
 */

/**
 * @typedef {object} ErrorDetail
 * @property {'socket' | 'token' | 'server' | 'gateway' | 'queue_full' | 'retries_exhausted' | 'config' | 'recovery_timeout'} kind
 *   What failed.
 * @property {string} message Human-readable description.
 * @property {string} [code] Error code (server and token errors).
 * @property {number} [status] HTTP status (token errors).
 * @property {unknown} [data] The server's error message as received.
 * @property {string} [dropped] The message dropped from a full send queue.
 * @property {unknown} [error] The underlying exception.
 */

/**
 * @typedef {object} StateChangeDetail
 * @property {ConnectionState} state The new state.
 * @property {ConnectionState} previous The state before.
 */

/**
 * The detail of each client event; `M` is the union of messages the server sends.
 *
 * @template M
 * @typedef {object} ClientEventMap
 * @property {OpenDetail} open The connection opened.
 * @property {CloseDetail} close The connection closed.
 * @property {ReconnectingDetail} reconnecting A reconnect is scheduled.
 * @property {M | unknown} message Every incoming message: parsed JSON, or the raw string when it is not JSON.
 * @property {ErrorDetail} error Something failed (the client carries on unless it says otherwise).
 * @property {DeniedDetail} denied The token endpoint refused: the client stopped.
 * @property {StateChangeDetail} statechange The state changed.
 * @property {RecoveredDetail} recovered A history channel's recovery finished.
 */

/** Version of this client. @type {string} */
export const VERSION = '0.1.0';

/** API Gateway closes a connection that has been idle for 10 minutes. */
export const API_GATEWAY_IDLE_TIMEOUT_MS = 10 * 60 * 1000;
/** API Gateway closes every connection after 2 hours. */
export const API_GATEWAY_MAX_CONNECTION_MS = 2 * 60 * 60 * 1000;
/** API Gateway's largest message (128 KiB); larger ones close the connection with 1009. */
export const MAX_MESSAGE_BYTES = 128 * 1024;

/**
 * Default options; every one can be overridden per client.
 *
 * @type {Readonly<Required<Omit<ClientOptions, 'url' | 'tokenUrl' | 'getToken' | 'WebSocket' | 'fetch' | 'random' | 'csrfToken' | 'protocols'>>> & {protocols: undefined, csrfToken: undefined}}
 */
export const DEFAULTS = Object.freeze({
  channel: null,
  params: {},
  protocols: undefined,
  tokenIn: 'protocol',
  tokenProtocolPrefix: 'apigw-ws.token.',
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
  history: true,
  positions: Object.freeze({}),
  gapWait: 300,
  recoverTimeout: 10000,
});

/** Most channels one `$recover` request names (the server's limit). */
const MAX_RECOVER_CHANNELS = 32;

/** The subprotocol offered (and selected by the server) next to the token subprotocol. */
export const DEFAULT_PROTOCOL = 'apigw-ws';

/** What a WebSocket subprotocol may hold (an RFC 7230 token); browsers refuse anything else. */
const SUBPROTOCOL = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

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
  /**
   * @param {string} message
   * @param {{status?: number, code?: string, retryAfter?: number | null}} [init] HTTP status,
   *   the server's error code, and the milliseconds the server asked us to wait (`Retry-After`).
   */
  constructor(message, { status = 0, code = 'token_error', retryAfter = null } = {}) {
    super(message);
    this.name = 'TokenError';
    /** HTTP status of the token endpoint (0: no answer). @type {number} */
    this.status = status;
    /** The server's error code. @type {string} */
    this.code = code;
    /** Milliseconds the server asked us to wait (from `Retry-After`). @type {number | null} */
    this.retryAfter = retryAfter;
  }

  /** 401 and 403 mean "not allowed": retrying will not help. @type {boolean} */
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
 * @param {BackoffOptions} [options]
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

/**
 * A ws:// or wss:// URL for `base`, resolved against the page for relative paths, with `query`
 * added (null and undefined values left out).
 *
 * @param {string | URL} base
 * @param {Record<string, unknown>} [query]
 * @returns {string}
 */
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
 * send with `send()`; `close()` when done. `M` is the union of messages your server sends, each
 * with a literal `type`, so `onMessage('chat_message', m => m.text)` is type-checked.
 *
 * @template {{type: string}} [M=IncomingMessage]
 */
export class ApigwWsClient extends EventTarget {
  /**
   * @param {ClientOptions} options
   */
  constructor(options = {}) {
    super();
    if (!options.url && !options.tokenUrl && !options.getToken) {
      throw new TypeError('apigw-ws: give `url`, `tokenUrl` or `getToken`');
    }
    /** The options in effect (defaults merged in). @type {ClientOptions} */
    this.options = {
      ...DEFAULTS,
      ...options,
      backoff: { ...DEFAULTS.backoff, ...(options.backoff || {}) },
    };
    /** @private */
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    /** @private */
    this._fetch = options.fetch || ((...args) => globalThis.fetch(...args));
    /** @private */
    this._random = options.random || Math.random;
    if (!this._WebSocket) throw new TypeError('apigw-ws: no WebSocket implementation available');
    /** @private */
    this._channel = this.options.channel ?? null;
    /** @private */
    this._state = State.IDLE;
    /** @private */
    this._ws = null;
    /** @private */
    this._attempt = 0;
    /** @private */
    this._generation = 0;
    /** @private */
    this._queue = [];
    /** @private */
    this._timers = { retry: null, keepalive: null, maxAge: null, stable: null };
    /** @private */
    this._abort = null;
    /** @private */
    this._opened = null;
    /** @private */
    this._everOpened = false;
    /** Per history channel: position, buffered out-of-order envelopes, timers. @private */
    this._tracks = new Map();
    /** Channels the server said keep no history. @private */
    this._noHistory = new Set();
    /** Duplicate history messages dropped so far. @private */
    this._duplicates = 0;
    for (const [channel, position] of Object.entries(this.options.positions || {})) {
      if (position && typeof position.epoch === 'string' && Number.isSafeInteger(position.offset)) {
        this._track(channel).position = { epoch: position.epoch, offset: position.offset };
      }
    }
    /** @private */
    this._onOnline = () => {
      if (this._state === State.RECONNECTING && this._timers.retry !== null) {
        this._clearTimer('retry');
        this._openSocket();
      }
    };
  }

  /** Current state: idle, connecting, open, reconnecting or closed. @type {ConnectionState} */
  get state() {
    return this._state;
  }

  /**
   * The channel the next (or current) connection joins; `null` for the server's default.
   * @type {string | null}
   */
  get channel() {
    return this._channel;
  }

  /** Messages waiting for the connection to open. @type {number} */
  get queued() {
    return this._queue.length;
  }

  /** Reconnect attempts since the connection was last stable (0 while healthy). @type {number} */
  get attempt() {
    return this._attempt;
  }

  /**
   * The position reached in each history channel (save it, e.g. in `sessionStorage`, and pass
   * it back as the `positions` option to recover across page loads).
   * @type {Record<string, HistoryPosition>}
   */
  get positions() {
    /** @type {Record<string, HistoryPosition>} */
    const out = {};
    for (const [channel, track] of this._tracks) {
      if (track.position) out[channel] = { ...track.position };
    }
    return out;
  }

  /** History messages dropped because they had been delivered already. @type {number} */
  get duplicatesDropped() {
    return this._duplicates;
  }

  /**
   * Ask the server for what was missed in history `channels` (default: every tracked one and
   * the connection's channel). The client does it by itself after every (re)connect and on a
   * gap; call it after subscribing to a history channel. Results arrive as `recovered` events.
   * @param {string[]} [channels]
   * @returns {void}
   */
  recover(channels) {
    const names = channels || this._historyChannels();
    for (const name of names) {
      const track = this._track(name);
      track.recovering = true;
      this._clearTrackTimer(track, 'gap');
    }
    if (this._state === State.OPEN && this._ws && this._ws.readyState === WS_OPEN) {
      this._sendRecover(names);
    } // else: the next open asks for every recovering channel
  }

  /**
   * Ask for the member list of a presence channel (default: the connection's channel); the
   * answer arrives as the message `{"type": "$presence", channel, members, connections}`, and
   * later changes as `member_added` / `member_removed` messages.
   * @param {string | null} [channel]
   * @returns {boolean}
   */
  requestPresence(channel = this._channel) {
    if (!channel) throw new TypeError('apigw-ws: requestPresence needs a channel');
    return this.send('$presence', { channel });
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
   * @param {Record<string, unknown>} [data]
   * @returns {boolean}
   */
  send(action, data = {}) {
    if (typeof action !== 'string' || !action) throw new TypeError('apigw-ws: action must be a non-empty string');
    return this.sendJSON({ ...data, [this.options.actionKey]: action });
  }

  /**
   * Send any JSON-serialisable value (queued like `send`).
   * @param {unknown} value
   * @returns {boolean}
   */
  sendJSON(value) {
    return this.sendRaw(JSON.stringify(value));
  }

  /**
   * Send a string as it is (queued like `send`). Throws if it exceeds 128 KiB.
   * @param {string} text
   * @returns {boolean}
   */
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
   * @param {string | null} channel
   * @returns {Promise<void>}
   */
  setChannel(channel) {
    this._channel = channel ?? null;
    if (this._state === State.IDLE || this._state === State.CLOSED) return this.connect();
    return this.reconnect('channel_changed');
  }

  /**
   * Drop the current connection (if any) and connect again now, with a fresh token and no
   * backoff. Queued messages go to the new connection. Emits `reconnecting` with `reason`.
   * @param {string} [reason]
   * @returns {Promise<void>}
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

  /**
   * Close for good (until `connect()` is called again). Pending sends are discarded.
   * @param {number} [code]
   * @param {string} [reason]
   * @returns {void}
   */
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
   * @template {keyof ClientEventMap<M>} K
   * @param {K} type
   * @param {(detail: ClientEventMap<M>[K], event: CustomEvent<ClientEventMap<M>[K]>) => void} listener
   * @returns {() => void}
   */
  on(type, listener) {
    const wrapped = (event) => listener(event.detail, event);
    this.addEventListener(type, wrapped);
    return () => this.removeEventListener(type, wrapped);
  }

  /**
   * Listen to incoming messages whose `type` field (see `typeKey`) equals `type`. The listener
   * gets the parsed message. Returns a function that removes it.
   * @template {M['type']} T
   * @param {T} type
   * @param {(message: Extract<M, {type: T}>, event: CustomEvent<Extract<M, {type: T}>>) => void} listener
   * @returns {() => void}
   */
  onMessage(type, listener) {
    return this.on(`message:${type}`, listener);
  }

  /**
   * A promise of the next event of `type` (its detail).
   * @template {keyof ClientEventMap<M>} K
   * @param {K} type
   * @returns {Promise<ClientEventMap<M>[K]>}
   */
  once(type) {
    return new Promise((resolve) => {
      this.addEventListener(type, (event) => resolve(event.detail), { once: true });
    });
  }

  // --- internals --------------------------------------------------------------------

  /** Stop everything and settle a pending `connect()` promise with `error`. @private */
  _shutdown(code, reason, error) {
    this._retire(code, reason);
    this._queue = [];
    if (typeof globalThis.removeEventListener === 'function') {
      globalThis.removeEventListener('online', this._onOnline);
    }
    this._setState(State.CLOSED);
    if (this._opened && !this._opened.settled) this._opened.reject(error);
  }

  /** @private */
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

  /** @private */
  _setState(state) {
    if (state === this._state) return;
    const previous = this._state;
    this._state = state;
    this._emit('statechange', { state, previous });
  }

  /** @private */
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** @private */
  _clearTimer(name) {
    if (this._timers[name] !== null) {
      clearTimeout(this._timers[name]);
      this._timers[name] = null;
    }
  }

  /** @private */
  _clearAllTimers() {
    for (const name of Object.keys(this._timers)) this._clearTimer(name);
    for (const track of this._tracks.values()) {
      for (const name of Object.keys(track.timers)) this._clearTrackTimer(track, name);
    }
  }

  /** Forget the current socket and any attempt in flight; close the socket if open. @private */
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

  /** @private */
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

  /** @private */
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
    let protocols = this.options.protocols;
    if (token) {
      const asProtocol = this.options.tokenIn === 'protocol' && SUBPROTOCOL.test(token.token);
      if (asProtocol) {
        const own = protocols === undefined ? [DEFAULT_PROTOCOL] : Array.isArray(protocols) ? protocols : [protocols];
        protocols = [...own, this.options.tokenProtocolPrefix + token.token];
      } else {
        query[this.options.tokenParam] = token.token;
      }
    }
    let ws;
    try {
      ws = new this._WebSocket(websocketUrl(base, query), protocols);
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

  /** @private */
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

  /** @private */
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
    if (this.options.history) {
      // Whatever was sent while we were away (or during the handshake): ask before anything else.
      const names = this._historyChannels();
      for (const name of names) this._track(name).recovering = true;
      if (names.length) this._sendRecover(names);
    }
    const pending = this._queue;
    this._queue = [];
    for (const text of pending) this._write(text);
    if (this._opened && !this._opened.settled) this._opened.resolve();
    this._emit('open', { channel: this._channel, reconnected });
  }

  /** @private */
  _onMessage(raw) {
    let data = raw;
    if (typeof raw === 'string') {
      try {
        data = JSON.parse(raw);
      } catch {
        data = raw;
      }
    }
    if (this.options.history && data && typeof data === 'object' && !Array.isArray(data)) {
      if (this._isEnvelope(data)) {
        this._onEnvelope(data);
        return;
      }
      if (data[this.options.typeKey] === '$recovered' && typeof data.channel === 'string') {
        this._onRecovered(data);
        return;
      }
      if (data[this.options.typeKey] === '$skip') {
        // the offset of our own message, which the server did not send back to us
        const mark = { channel: data.channel, offset: data.offset, epoch: data.epoch, data: null };
        if (this._isEnvelope(mark)) this._onEnvelope({ ...mark, skip: true });
        return;
      }
    }
    this._dispatch(data);
  }

  /** Emit `message` and `message:<type>` (or an error event) for one message. @private */
  _dispatch(data) {
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

  /** @private */
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

  /** @private */
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

  // --- history channels ---------------------------------------------------------------

  /** The channels to recover: the connection's channel and every tracked one. @private */
  _historyChannels() {
    const names = new Set(this._tracks.keys());
    if (this._channel !== null) names.add(this._channel);
    return [...names].filter((name) => !this._noHistory.has(name));
  }

  /** The state of one history channel (created on first use). @private */
  _track(channel) {
    let track = this._tracks.get(channel);
    if (!track) {
      track = { position: null, recovering: false, buffer: [], count: 0, timers: { gap: null, recover: null } };
      this._tracks.set(channel, track);
    }
    return track;
  }

  /** @private */
  _clearTrackTimer(track, name) {
    if (track.timers[name] !== null) {
      clearTimeout(track.timers[name]);
      track.timers[name] = null;
    }
  }

  /** @private */
  _isEnvelope(data) {
    return (
      typeof data.channel === 'string' &&
      typeof data.epoch === 'string' &&
      Number.isSafeInteger(data.offset) &&
      data.offset > 0 &&
      Object.prototype.hasOwnProperty.call(data, 'data') &&
      !Object.prototype.hasOwnProperty.call(data, this.options.typeKey)
    );
  }

  /** @private */
  _sendRecover(names) {
    for (let i = 0; i < names.length; i += MAX_RECOVER_CHANNELS) {
      /** @type {Record<string, HistoryPosition | null>} */
      const channels = {};
      for (const name of names.slice(i, i + MAX_RECOVER_CHANNELS)) {
        const track = this._track(name);
        channels[name] = track.position ? { ...track.position } : null;
        track.count = 0;
        this._clearTrackTimer(track, 'recover');
        track.timers.recover = setTimeout(() => this._recoverTimedOut(name), this.options.recoverTimeout);
      }
      this._write(JSON.stringify({ [this.options.actionKey]: '$recover', channels }));
    }
  }

  /** @private */
  _recoverTimedOut(channel) {
    const track = this._track(channel);
    track.timers.recover = null;
    if (!track.recovering) return;
    track.recovering = false;
    this._emit('error', { kind: 'recovery_timeout', message: `no $recover answer for ${channel}` });
    this._drain(channel, track);
  }

  /** A live message of a history channel. @private */
  _onEnvelope(envelope) {
    const track = this._track(envelope.channel);
    this._noHistory.delete(envelope.channel);
    if (track.recovering || !this._accept(envelope.channel, track, envelope)) {
      track.buffer.push(envelope);
      if (!track.recovering) this._armGapTimer(envelope.channel, track);
    } else if (track.buffer.length) {
      this._drain(envelope.channel, track); // it may have filled a gap
    }
  }

  /**
   * Deliver `envelope` if it is the next one, drop it if seen; false if it must wait (a gap,
   * or another epoch). @private
   */
  _accept(channel, track, envelope) {
    if (!track.position) {
      // never positioned (e.g. a channel joined by a later subscribe): start here
      track.position = { epoch: envelope.epoch, offset: envelope.offset - 1 };
    }
    const position = track.position;
    if (envelope.epoch !== position.epoch) {
      if (position.epoch !== '' || position.offset !== 0) return false;
      position.epoch = envelope.epoch; // the channel's first epoch
    }
    if (envelope.offset <= position.offset) {
      this._duplicates += 1;
      return true;
    }
    if (envelope.offset !== position.offset + 1) return false;
    position.offset = envelope.offset;
    if (envelope.skip) return true; // our own message: the page already shows it
    track.count += 1;
    this._dispatch(envelope.data);
    return true;
  }

  /** Deliver buffered envelopes that are now in order; recover if a gap remains. @private */
  _drain(channel, track) {
    track.buffer.sort((a, b) => a.offset - b.offset);
    const waiting = [];
    for (const envelope of track.buffer) {
      if (!this._accept(channel, track, envelope)) waiting.push(envelope);
    }
    track.buffer = waiting.filter((e) => e.epoch === track.position.epoch || track.position.offset === 0);
    if (track.buffer.length) this._armGapTimer(channel, track);
    else this._clearTrackTimer(track, 'gap');
  }

  /** @private */
  _armGapTimer(channel, track) {
    if (track.timers.gap !== null) return;
    track.timers.gap = setTimeout(() => {
      track.timers.gap = null;
      this._drain(channel, track);
      if (track.buffer.length && !track.recovering) this.recover([channel]);
    }, this.options.gapWait);
  }

  /** One `$recovered` frame from the server. @private */
  _onRecovered(frame) {
    const channel = frame.channel;
    const track = this._track(channel);
    if (frame.recovered === false && (frame.reason === 'no_history' || frame.reason === 'not_subscribed')) {
      for (const name of Object.keys(track.timers)) this._clearTrackTimer(track, name);
      this._tracks.delete(channel);
      if (frame.reason === 'no_history') this._noHistory.add(channel);
      return;
    }
    const epoch = typeof frame.epoch === 'string' ? frame.epoch : '';
    const top = Number.isSafeInteger(frame.offset) ? frame.offset : 0;
    const messages = Array.isArray(frame.messages) ? frame.messages.filter((m) => m && this._isEnvelope(m)) : [];
    if (frame.recovered === false) {
      track.position = { epoch, offset: top }; // continue from here; the app reloads its state
    } else if (!track.position) {
      // a first connection: start before what was sent since it opened, else at the top
      track.position = { epoch, offset: messages.length ? messages[0].offset - 1 : top };
    }
    for (const envelope of messages) this._accept(channel, track, envelope);
    if (frame.final === false) return;
    if (frame.more === true) {
      this._sendRecover([channel]);
      return;
    }
    this._clearTrackTimer(track, 'recover');
    track.recovering = false;
    const detail = { channel, recovered: frame.recovered !== false, count: track.count };
    if (frame.recovered === false) detail.reason = String(frame.reason || 'history_expired');
    this._emit('recovered', detail);
    this._drain(channel, track);
  }

  /** @private */
  _write(text) {
    this._ws.send(text);
    this._armKeepalive();
  }

  /** @private */
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

/**
 * Create a client and start connecting: `const ws = connect({tokenUrl: '/ws/token/'})`.
 *
 * @template {{type: string}} [M=IncomingMessage]
 * @param {ClientOptions} options
 * @returns {ApigwWsClient<M>}
 */
export function connect(options) {
  const client = new ApigwWsClient(options);
  client.connect();
  return client;
}

export default ApigwWsClient;
