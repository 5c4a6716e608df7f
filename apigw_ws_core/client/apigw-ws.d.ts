// Type declarations for apigw-ws.js (the apigw-ws browser client).

export declare const VERSION: string;
/** API Gateway closes a connection idle for this long (10 minutes). */
export declare const API_GATEWAY_IDLE_TIMEOUT_MS: number;
/** API Gateway closes every connection after this long (2 hours). */
export declare const API_GATEWAY_MAX_CONNECTION_MS: number;
/** Largest message API Gateway accepts (128 KiB). */
export declare const MAX_MESSAGE_BYTES: number;

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export declare const State: {
  readonly IDLE: 'idle';
  readonly CONNECTING: 'connecting';
  readonly OPEN: 'open';
  readonly RECONNECTING: 'reconnecting';
  readonly CLOSED: 'closed';
};

/** What a token endpoint (or `getToken`) returns. A bare string is taken as the token. */
export interface TokenResult {
  token: string;
  /** WebSocket URL to use when the client has no `url` option. */
  url?: string;
  expires_in?: number;
}

export interface TokenRequestContext {
  /** The channel the connection is for (`null`: the server's default). */
  channel: string | null;
  /** Reconnect attempt number (0 for a first or deliberate connect). */
  attempt: number;
  /** Aborted when the client closes or reconnects before the token arrives. */
  signal?: AbortSignal;
}

export interface BackoffOptions {
  /** Delay before the first retry, in ms (default 500). */
  initialDelay?: number;
  /** Cap on the delay, in ms (default 30000). */
  maxDelay?: number;
  /** Growth per attempt (default 2). */
  factor?: number;
  /** Share of the delay taken away at random: 0 none, 1 "full jitter" (default 0.5). */
  jitter?: number;
}

export interface ClientOptions {
  /** WebSocket endpoint (wss://…/stage, or http(s) and relative URLs, converted). */
  url?: string;
  /** Endpoint returning `{token, url?}` as JSON; called before every connect. */
  tokenUrl?: string;
  /**
   * Extra `fetch` options for `tokenUrl`. The default is a POST with the JSON body
   * `{"channel": ...}`; with `method: 'GET'` the channel goes in the query string instead.
   */
  tokenRequest?: RequestInit;
  /**
   * CSRF token sent with the POST (string or function). Default: the page's
   * `<meta name="csrf-token">`, else Django's `csrftoken` cookie. `null` sends none.
   */
  csrfToken?: string | (() => string | null | undefined) | null;
  /** Header carrying the CSRF token (default `X-CSRFToken`, which Django and Flask-WTF read). */
  csrfHeader?: string;
  /** Fetch a token yourself; throw a `TokenError` with status 401/403 to deny. */
  getToken?: (context: TokenRequestContext) => Promise<string | TokenResult> | string | TokenResult;
  /** Channel to join at connect (`?channel=`). */
  channel?: string | null;
  /** Extra query parameters on the WebSocket URL. */
  params?: Record<string, string | number | boolean | null | undefined>;
  protocols?: string | string[];
  /** Query parameter names (defaults `ws_token` and `channel`). */
  tokenParam?: string;
  channelParam?: string;
  /** Key naming the handler in sent messages (default `action`). */
  actionKey?: string;
  /** Key naming the type of incoming messages (default `type`). */
  typeKey?: string;
  /** Reconnect after drops (default true). */
  reconnect?: boolean;
  /** Give up after this many failed attempts in a row (default Infinity). */
  maxRetries?: number;
  backoff?: BackoffOptions;
  /** A connection open this long (ms) resets the backoff (default 10000). */
  stableAfter?: number;
  /** Send `keepaliveMessage` after this long without sending (ms, default 300000; 0 disables). */
  keepaliveInterval?: number;
  /** Keepalive frame (default `{"action": "ping"}`; `null` disables). */
  keepaliveMessage?: object | string | null;
  /** Replace the connection after this long (ms, default 2 h minus 1 min; 0 disables). */
  maxConnectionAge?: number;
  /** Messages kept while reconnecting (default 100; the oldest is dropped beyond). */
  maxQueue?: number;
  /** Retry at once when the browser comes back online (default true). */
  reconnectOnOnline?: boolean;
  /** Implementations to use instead of the globals (tests, other runtimes). */
  WebSocket?: typeof WebSocket;
  fetch?: typeof fetch;
  random?: () => number;
}

export declare const DEFAULTS: Readonly<Required<Omit<ClientOptions, 'url' | 'tokenUrl' | 'getToken' | 'WebSocket' | 'fetch' | 'random' | 'csrfToken'>>>;

/** Any message the server sends with a string `type`. */
export interface IncomingMessage {
  type: string;
  [key: string]: unknown;
}

export interface OpenDetail {
  channel: string | null;
  /** True when this is not the first connection since `connect()`. */
  reconnected: boolean;
}

export interface CloseDetail {
  code: number;
  reason: string;
  wasClean: boolean;
  /** Whether the client will try again (false after `close()`, a denial or exhausted retries). */
  willReconnect: boolean;
  /** Whether the connection had opened (false: the handshake failed or was refused). */
  opened: boolean;
}

export interface ReconnectingDetail {
  attempt: number;
  delay: number;
  reason: 'closed' | 'handshake_failed' | 'token_failed' | 'socket_error' | 'max_age' | 'channel_changed' | string;
}

export interface DeniedDetail {
  status: number;
  code: string;
  message: string;
  channel: string | null;
}

export interface ErrorDetail {
  kind: 'socket' | 'token' | 'server' | 'gateway' | 'queue_full' | 'retries_exhausted' | 'config';
  message: string;
  code?: string;
  status?: number;
  data?: unknown;
  dropped?: string;
  error?: unknown;
}

export interface StateChangeDetail {
  state: ConnectionState;
  previous: ConnectionState;
}

export interface ClientEventMap<M> {
  open: OpenDetail;
  close: CloseDetail;
  reconnecting: ReconnectingDetail;
  /** Every incoming message: parsed JSON, or the raw string when it is not JSON. */
  message: M | unknown;
  error: ErrorDetail;
  denied: DeniedDetail;
  statechange: StateChangeDetail;
}

export declare class TokenError extends Error {
  constructor(message: string, init?: { status?: number; code?: string; retryAfter?: number | null });
  readonly status: number;
  readonly code: string;
  /** Milliseconds the server asked us to wait (from `Retry-After`). */
  readonly retryAfter: number | null;
  /** True for 401 and 403: the client stops instead of retrying. */
  readonly denied: boolean;
}

/**
 * The client. `M` is the union of messages your server sends, each with a literal `type`,
 * so `onMessage('chat_message', m => m.text)` is checked.
 */
export declare class ApigwWsClient<M extends { type: string } = IncomingMessage> extends EventTarget {
  constructor(options: ClientOptions);
  readonly options: ClientOptions;
  readonly state: ConnectionState;
  readonly channel: string | null;
  readonly queued: number;
  readonly attempt: number;
  connect(): Promise<void>;
  send(action: string, data?: Record<string, unknown>): boolean;
  sendJSON(value: unknown): boolean;
  sendRaw(text: string): boolean;
  setChannel(channel: string | null): Promise<void>;
  reconnect(reason?: string): Promise<void>;
  close(code?: number, reason?: string): void;
  on<K extends keyof ClientEventMap<M>>(
    type: K,
    listener: (detail: ClientEventMap<M>[K], event: CustomEvent<ClientEventMap<M>[K]>) => void,
  ): () => void;
  onMessage<T extends M['type']>(
    type: T,
    listener: (message: Extract<M, { type: T }>, event: CustomEvent<Extract<M, { type: T }>>) => void,
  ): () => void;
  once<K extends keyof ClientEventMap<M>>(type: K): Promise<ClientEventMap<M>[K]>;
}

export declare function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;
export declare function websocketUrl(base: string | URL, query?: Record<string, unknown>): string;
export declare function connect<M extends { type: string } = IncomingMessage>(options: ClientOptions): ApigwWsClient<M>;

export default ApigwWsClient;
