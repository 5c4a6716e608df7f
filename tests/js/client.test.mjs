// Unit tests of the browser client (apigw_ws_core/client/apigw-ws.js) with node's test runner:
//   node --test tests/js/
// Time is mocked (node:test mock timers), the network is a fake WebSocket and a fake fetch.

import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, mock, test } from 'node:test';

import {
  API_GATEWAY_IDLE_TIMEOUT_MS,
  API_GATEWAY_MAX_CONNECTION_MS,
  ApigwWsClient,
  DEFAULTS,
  MAX_MESSAGE_BYTES,
  TokenError,
  backoffDelay,
  connect,
  websocketUrl,
} from '../../apigw_ws_core/client/apigw-ws.js';
import { FakeWebSocket, fakeFetch, flush, json, record } from './fakes.mjs';

const WS_URL = 'wss://abc123.execute-api.eu-west-1.amazonaws.com/prod';

function makeClient(options = {}) {
  const fetch = options.fetch || fakeFetch();
  const client = new ApigwWsClient({
    url: WS_URL,
    tokenUrl: 'https://app.example.com/ws/token/',
    WebSocket: FakeWebSocket,
    random: () => 0,
    reconnectOnOnline: false,
    ...options,
    fetch,
  });
  return { client, fetch };
}

/** Connect and open the first socket; returns it. */
async function opened(client) {
  client.connect();
  await flush();
  const ws = FakeWebSocket.last;
  ws.serverOpen();
  return ws;
}

beforeEach(() => {
  FakeWebSocket.reset();
  mock.timers.enable({ apis: ['setTimeout'] });
});

afterEach(() => {
  mock.timers.reset();
});

describe('backoffDelay', () => {
  test('grows exponentially from initialDelay and is capped at maxDelay', () => {
    const opts = { initialDelay: 100, maxDelay: 1000, factor: 2, jitter: 0 };
    const delays = [1, 2, 3, 4, 5, 6, 10].map((n) => backoffDelay(n, opts));
    assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000, 1000]);
  });

  test('jitter takes away up to its share of the delay, at random', () => {
    const opts = { initialDelay: 1000, maxDelay: 60000, factor: 2, jitter: 0.5 };
    assert.equal(backoffDelay(3, opts, () => 0), 4000);
    assert.equal(backoffDelay(3, opts, () => 0.5), 3000);
    assert.equal(backoffDelay(3, opts, () => 1), 2000);
    // full jitter spans 0..base
    assert.equal(backoffDelay(3, { ...opts, jitter: 1 }, () => 1), 0);
  });

  test('real randomness spreads clients out within the bounds', () => {
    const opts = { initialDelay: 1000, maxDelay: 60000, factor: 2, jitter: 0.5 };
    const delays = Array.from({ length: 200 }, () => backoffDelay(4, opts));
    assert.ok(delays.every((d) => d >= 4000 && d <= 8000), 'all within [base/2, base]');
    assert.ok(new Set(delays).size > 50, 'not all the same');
  });

  test('defaults: 500 ms first, 30 s cap', () => {
    assert.equal(backoffDelay(1, {}, () => 0), 500);
    assert.equal(backoffDelay(50, {}, () => 0), 30000);
  });
});

describe('connecting', () => {
  test('POSTs for a token for the channel, then opens the socket with it', async () => {
    const { client, fetch } = makeClient({ channel: 'general', params: { v: 2 } });
    const states = record(client, ['statechange', 'open']);
    const done = client.connect();
    assert.equal(client.state, 'connecting');
    await flush();
    assert.equal(fetch.calls.length, 1);
    const call = fetch.calls[0];
    assert.equal(call.url.pathname, '/ws/token/');
    assert.equal(call.url.search, '');
    assert.equal(call.init.method, 'POST');
    assert.deepEqual(JSON.parse(call.init.body), { channel: 'general' });
    assert.equal(call.init.headers['Content-Type'], 'application/json');
    assert.equal(call.init.credentials, 'same-origin');
    assert.equal(call.init.headers.Accept, 'application/json');
    const ws = FakeWebSocket.last;
    assert.deepEqual(ws.query, { v: '2', channel: 'general' }); // no token in the URL
    assert.deepEqual(ws.protocols, ['apigw-ws', 'apigw-ws.token.tok-1']);
    assert.equal(ws.token, 'tok-1');
    assert.ok(ws.url.startsWith(`${WS_URL}?`));
    ws.serverOpen();
    await done;
    assert.equal(client.state, 'open');
    assert.deepEqual(states.of('open'), [{ channel: 'general', reconnected: false }]);
    assert.deepEqual(
      states.of('statechange').map((s) => s.state),
      ['connecting', 'open'],
    );
  });

  test('with method GET the channel goes in the query string', async () => {
    const { client, fetch } = makeClient({ channel: 'general', tokenRequest: { method: 'GET' } });
    client.connect();
    await flush();
    const call = fetch.calls[0];
    assert.equal(call.init.method, 'GET');
    assert.equal(call.init.body, undefined);
    assert.equal(call.url.searchParams.get('channel'), 'general');
  });

  test('the CSRF token: option, else <meta name="csrf-token">, else the csrftoken cookie', async () => {
    const saved = globalThis.document;
    try {
      const { client: a, fetch: fa } = makeClient({ csrfToken: () => 'from-fn' });
      a.connect();
      await flush();
      assert.equal(fa.calls[0].init.headers['X-CSRFToken'], 'from-fn');

      globalThis.document = {
        cookie: 'other=1; csrftoken=from%20cookie',
        querySelector: () => null,
      };
      const { client: b, fetch: fb } = makeClient();
      b.connect();
      await flush();
      assert.equal(fb.calls[0].init.headers['X-CSRFToken'], 'from cookie');

      globalThis.document.querySelector = (sel) =>
        sel === 'meta[name="csrf-token"]' ? { getAttribute: () => 'from-meta' } : null;
      const { client: c, fetch: fc } = makeClient({ csrfHeader: 'X-CSRF-Token' });
      c.connect();
      await flush();
      assert.equal(fc.calls[0].init.headers['X-CSRF-Token'], 'from-meta');

      const { client: d, fetch: fd } = makeClient({ csrfToken: null });
      d.connect();
      await flush();
      assert.equal(fd.calls[0].init.headers['X-CSRFToken'], undefined);
    } finally {
      globalThis.document = saved;
    }
  });

  test('uses the URL the token endpoint returns when no url option is given', async () => {
    const fetch = fakeFetch(() => json({ token: 't', url: 'https://local.test:8001/local' }));
    const { client } = makeClient({ url: undefined, fetch });
    client.connect();
    await flush();
    assert.equal(FakeWebSocket.last.url, 'wss://local.test:8001/local');
    assert.equal(FakeWebSocket.last.token, 't');
  });

  test('getToken replaces the token endpoint', async () => {
    const asked = [];
    const { client, fetch } = makeClient({
      tokenUrl: undefined,
      getToken: ({ channel, attempt }) => {
        asked.push({ channel, attempt });
        return `custom-${asked.length}`;
      },
      channel: 'lobby',
    });
    await opened(client);
    assert.equal(fetch.calls.length, 0);
    assert.deepEqual(asked, [{ channel: 'lobby', attempt: 0 }]);
    assert.equal(FakeWebSocket.last.token, 'custom-1');
  });

  test('tokenRequest adds headers and overrides fetch options', async () => {
    const { client, fetch } = makeClient({
      tokenRequest: { method: 'PUT', headers: { Authorization: 'Bearer x' }, credentials: 'include' },
    });
    client.connect();
    await flush();
    assert.equal(fetch.calls[0].init.method, 'PUT');
    assert.equal(fetch.calls[0].init.credentials, 'include');
    assert.equal(fetch.calls[0].init.headers.Authorization, 'Bearer x');
    assert.equal(fetch.calls[0].init.headers.Accept, 'application/json');
  });

  test('needs a url, a tokenUrl or getToken', () => {
    assert.throws(() => new ApigwWsClient({ WebSocket: FakeWebSocket }), TypeError);
  });

  test('connect() twice while connecting returns the same promise and opens one socket', async () => {
    const { client } = makeClient();
    const a = client.connect();
    const b = client.connect();
    assert.equal(a, b);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 1);
  });

  test('connect() helper creates and starts a client', async () => {
    const fetch = fakeFetch();
    const client = connect({ url: WS_URL, tokenUrl: 'https://app.example.com/t', fetch, WebSocket: FakeWebSocket, reconnectOnOnline: false });
    assert.equal(client.state, 'connecting');
    await flush();
    assert.equal(FakeWebSocket.instances.length, 1);
    client.close();
  });
});

describe('reconnecting', () => {
  test('a dropped connection comes back with a NEW token after the backoff delay', async () => {
    const { client, fetch } = makeClient({ channel: 'general' });
    const events = record(client, ['close', 'reconnecting', 'open']);
    const first = await opened(client);
    first.serverClose(1001, 'Going away');
    assert.equal(client.state, 'reconnecting');
    assert.deepEqual(events.of('close')[0], {
      code: 1001,
      reason: 'Going away',
      wasClean: true,
      willReconnect: true,
      opened: true,
    });
    assert.deepEqual(events.of('reconnecting'), [{ attempt: 1, delay: 500, reason: 'closed' }]);
    mock.timers.tick(499);
    await flush();
    assert.equal(fetch.calls.length, 1, 'no new attempt before the delay');
    mock.timers.tick(1);
    await flush();
    assert.equal(fetch.calls.length, 2, 'a fresh token for the new connection');
    const second = FakeWebSocket.last;
    assert.notEqual(second, first);
    assert.equal(second.token, 'tok-2');
    assert.equal(second.query.channel, 'general');
    second.serverOpen();
    assert.deepEqual(events.of('open').at(-1), { channel: 'general', reconnected: true });
  });

  test('backoff grows across failed handshakes and resets once a connection is stable', async () => {
    const { client } = makeClient({ stableAfter: 10000 });
    const events = record(client, ['reconnecting']);
    client.connect();
    await flush();
    for (let i = 0; i < 4; i += 1) {
      FakeWebSocket.last.fail();
      mock.timers.tick(events.of('reconnecting').at(-1).delay);
      await flush();
    }
    assert.deepEqual(
      events.of('reconnecting').map((e) => [e.attempt, e.delay, e.reason]),
      [
        [1, 500, 'handshake_failed'],
        [2, 1000, 'handshake_failed'],
        [3, 2000, 'handshake_failed'],
        [4, 4000, 'handshake_failed'],
      ],
    );
    // A connection that opens and drops quickly does not reset the backoff ...
    FakeWebSocket.last.serverOpen();
    mock.timers.tick(5000);
    FakeWebSocket.last.serverClose(1006, '');
    assert.equal(events.of('reconnecting').at(-1).attempt, 5);
    mock.timers.tick(events.of('reconnecting').at(-1).delay);
    await flush();
    // ... one that stays up for stableAfter does.
    FakeWebSocket.last.serverOpen();
    mock.timers.tick(10000);
    assert.equal(client.attempt, 0);
    FakeWebSocket.last.serverClose(1001, 'Going away');
    assert.deepEqual(events.of('reconnecting').at(-1), { attempt: 1, delay: 500, reason: 'closed' });
  });

  test('jitter is applied to reconnect delays', async () => {
    const { client } = makeClient({ random: () => 0.5, backoff: { initialDelay: 1000, jitter: 0.5 } });
    const events = record(client, ['reconnecting']);
    const ws = await opened(client);
    ws.serverClose();
    assert.equal(events.of('reconnecting')[0].delay, 750);
  });

  test('events from a socket the client already replaced are ignored', async () => {
    const { client } = makeClient();
    const events = record(client, ['reconnecting', 'message']);
    const first = await opened(client);
    client.reconnect('manual');
    await flush();
    const second = FakeWebSocket.last;
    second.serverOpen();
    first.serverSend({ type: 'late' });
    first.serverClose(1006, '');
    assert.equal(client.state, 'open');
    assert.deepEqual(events.of('message'), []);
    assert.deepEqual(events.of('reconnecting').map((e) => e.reason), ['manual']);
  });

  test('gives up after maxRetries failed attempts', async () => {
    const { client } = makeClient({ maxRetries: 2 });
    const events = record(client, ['close', 'error']);
    const done = client.connect();
    await flush();
    FakeWebSocket.last.fail();
    mock.timers.tick(500);
    await flush();
    FakeWebSocket.last.fail();
    mock.timers.tick(1000);
    await flush();
    FakeWebSocket.last.fail();
    assert.equal(client.state, 'closed');
    assert.equal(events.of('close').at(-1).willReconnect, false);
    await assert.rejects(done);
    assert.equal(FakeWebSocket.instances.length, 3);
  });

  test('close() from a close or error listener stops the reconnect', async () => {
    const { client } = makeClient();
    client.on('close', ({ opened }) => {
      if (!opened) client.close(1000, 'refused');
    });
    client.connect();
    await flush();
    FakeWebSocket.last.fail();
    assert.equal(client.state, 'closed');
    mock.timers.tick(60000);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 1);

    const failing = makeClient({ fetch: fakeFetch(() => json({}, 500)) }).client;
    failing.on('error', () => failing.close());
    failing.connect();
    await flush();
    assert.equal(failing.state, 'closed');
  });

  test('reconnect: false closes for good on the first drop', async () => {
    const { client } = makeClient({ reconnect: false });
    const ws = await opened(client);
    ws.serverClose(1001, 'Going away');
    assert.equal(client.state, 'closed');
    mock.timers.tick(60000);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 1);
  });

  test('coming back online retries at once instead of waiting out the backoff', async () => {
    const target = new EventTarget();
    const { client, fetch } = makeClient({ reconnectOnOnline: true, backoff: { initialDelay: 20000 } });
    const saved = [globalThis.addEventListener, globalThis.removeEventListener];
    globalThis.addEventListener = target.addEventListener.bind(target);
    globalThis.removeEventListener = target.removeEventListener.bind(target);
    try {
      const ws = await opened(client);
      ws.serverClose(1006, '');
      target.dispatchEvent(new Event('online'));
      await flush();
      assert.equal(fetch.calls.length, 2);
      assert.equal(FakeWebSocket.instances.length, 2);
      client.close();
    } finally {
      [globalThis.addEventListener, globalThis.removeEventListener] = saved;
    }
  });
});

describe('tokens', () => {
  test('a 403 from the token endpoint denies: no socket, no retry, connect() rejects', async () => {
    const fetch = fakeFetch(() => json({ error: 'channel_forbidden', message: 'Not allowed.' }, 403));
    const { client } = makeClient({ fetch, channel: 'private-staff' });
    const events = record(client, ['denied', 'reconnecting']);
    const done = client.connect();
    await flush();
    assert.equal(client.state, 'closed');
    assert.deepEqual(events.of('denied'), [
      { status: 403, code: 'channel_forbidden', message: 'Not allowed.', channel: 'private-staff' },
    ]);
    assert.deepEqual(events.of('reconnecting'), []);
    const error = await done.catch((e) => e);
    assert.ok(error instanceof TokenError);
    assert.equal(error.denied, true);
    assert.equal(FakeWebSocket.instances.length, 0);
    mock.timers.tick(120000);
    await flush();
    assert.equal(fetch.calls.length, 1);
  });

  test('a 401 (logged out) also denies', async () => {
    const fetch = fakeFetch(() => new Response('nope', { status: 401 }));
    const { client } = makeClient({ fetch });
    const events = record(client, ['denied']);
    client.connect();
    await flush();
    assert.equal(events.of('denied')[0].code, 'http_401');
  });

  test('a failing token endpoint is retried with backoff; Retry-After is honoured', async () => {
    let n = 0;
    const fetch = fakeFetch(() => {
      n += 1;
      if (n === 1) return json({ error: 'rate_limited', message: 'Slow down.' }, 429, { 'Retry-After': '7' });
      if (n === 2) throw new TypeError('Failed to fetch');
      return json({ token: 'finally' });
    });
    const { client } = makeClient({ fetch });
    const events = record(client, ['error', 'reconnecting']);
    client.connect();
    await flush();
    assert.deepEqual(events.of('reconnecting')[0], { attempt: 1, delay: 7000, reason: 'token_failed' });
    assert.equal(events.of('error')[0].kind, 'token');
    assert.equal(events.of('error')[0].code, 'rate_limited');
    mock.timers.tick(7000);
    await flush();
    assert.deepEqual(events.of('reconnecting')[1], { attempt: 2, delay: 1000, reason: 'token_failed' });
    mock.timers.tick(1000);
    await flush();
    assert.equal(FakeWebSocket.last.token, 'finally');
  });

  test('a token response without a token is an error, retried', async () => {
    const fetch = fakeFetch(() => json({ nothing: true }));
    const { client } = makeClient({ fetch });
    const events = record(client, ['error']);
    client.connect();
    await flush();
    assert.equal(events.of('error')[0].code, 'bad_token_response');
    assert.equal(client.state, 'reconnecting');
    client.close();
  });

  test('close() while the token is being fetched aborts it and opens nothing', async () => {
    let release;
    const fetch = fakeFetch(
      (url, init) =>
        new Promise((resolve, reject) => {
          release = () => resolve(json({ token: 'late' }));
          init.signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
        }),
    );
    const { client } = makeClient({ fetch });
    const done = client.connect();
    await flush();
    client.close();
    release();
    await flush();
    assert.equal(fetch.calls[0].init.signal.aborted, true);
    assert.equal(FakeWebSocket.instances.length, 0);
    await assert.rejects(done);
  });
});

describe('token transport', () => {
  const getToken = (value) => () => value;

  test('by default the token is a subprotocol after apigw-ws, never in the URL', async () => {
    const { client } = makeClient({ tokenUrl: undefined, getToken: getToken('Ab_-9') });
    const ws = await opened(client);
    assert.deepEqual(ws.protocols, ['apigw-ws', 'apigw-ws.token.Ab_-9']);
    assert.ok(!ws.url.includes('Ab_-9'));
  });

  test('own protocols come first, the token last', async () => {
    const { client } = makeClient({ tokenUrl: undefined, getToken: getToken('t1'), protocols: 'v2' });
    assert.deepEqual((await opened(client)).protocols, ['v2', 'apigw-ws.token.t1']);
    const other = makeClient({ tokenUrl: undefined, getToken: getToken('t2'), protocols: ['a', 'b'] });
    assert.deepEqual((await opened(other.client)).protocols, ['a', 'b', 'apigw-ws.token.t2']);
  });

  test("tokenIn: 'query' keeps the old ?ws_token= and the given protocols", async () => {
    const { client } = makeClient({
      tokenUrl: undefined,
      getToken: getToken('q1'),
      tokenIn: 'query',
      protocols: ['v1'],
    });
    const ws = await opened(client);
    assert.equal(ws.query.ws_token, 'q1');
    assert.deepEqual(ws.protocols, ['v1']);
  });

  test('a token a browser would refuse as a subprotocol goes in the query string', async () => {
    const { client } = makeClient({ tokenUrl: undefined, getToken: getToken('a/b=c') });
    const ws = await opened(client);
    assert.equal(ws.query.ws_token, 'a/b=c');
    assert.equal(ws.protocols, undefined);
  });

  test('a custom prefix matches the server setting', async () => {
    const { client } = makeClient({
      tokenUrl: undefined,
      getToken: getToken('t'),
      tokenProtocolPrefix: 'myapp.auth.',
    });
    assert.deepEqual((await opened(client)).protocols, ['apigw-ws', 'myapp.auth.t']);
  });
});

describe('sending', () => {
  test('send(action, data) writes {"action": ..., ...data} as JSON', async () => {
    const { client } = makeClient();
    const ws = await opened(client);
    assert.equal(client.send('chat_message', { room: 'general', text: 'hi' }), true);
    assert.deepEqual(ws.sentJSON, [{ room: 'general', text: 'hi', action: 'chat_message' }]);
  });

  test('the action key wins over a same-named data field; actionKey is configurable', async () => {
    const { client } = makeClient({ actionKey: 'handler' });
    const ws = await opened(client);
    client.send('chat_message', { handler: 'evil' });
    assert.deepEqual(ws.sentJSON, [{ handler: 'chat_message' }]);
  });

  test('sends while connecting are queued and flushed in order on open', async () => {
    const { client } = makeClient();
    client.connect();
    assert.equal(client.send('a'), false);
    assert.equal(client.send('b'), false);
    assert.equal(client.queued, 2);
    await flush();
    const ws = FakeWebSocket.last;
    assert.deepEqual(ws.sent, []);
    ws.serverOpen();
    assert.deepEqual(ws.sentJSON.map((m) => m.action), ['a', 'b']);
    assert.equal(client.queued, 0);
  });

  test('sends while reconnecting go to the next connection', async () => {
    const { client } = makeClient();
    const first = await opened(client);
    first.serverClose(1006, '');
    client.send('during_outage', { n: 1 });
    mock.timers.tick(500);
    await flush();
    const second = FakeWebSocket.last;
    second.serverOpen();
    assert.deepEqual(first.sent, []);
    assert.deepEqual(second.sentJSON, [{ n: 1, action: 'during_outage' }]);
  });

  test('a full queue drops the oldest message and says so', async () => {
    const { client } = makeClient({ maxQueue: 2 });
    const events = record(client, ['error']);
    client.connect();
    client.send('one');
    client.send('two');
    client.send('three');
    assert.equal(client.queued, 2);
    assert.equal(events.of('error')[0].kind, 'queue_full');
    assert.deepEqual(JSON.parse(events.of('error')[0].dropped), { action: 'one' });
    await flush();
    FakeWebSocket.last.serverOpen();
    assert.deepEqual(FakeWebSocket.last.sentJSON.map((m) => m.action), ['two', 'three']);
  });

  test('messages over 128 KiB are refused before they would close the connection', async () => {
    const { client } = makeClient();
    await opened(client);
    assert.throws(() => client.send('big', { text: 'x'.repeat(MAX_MESSAGE_BYTES) }), RangeError);
    // multi-byte characters count as bytes, not characters
    assert.throws(() => client.sendRaw('é'.repeat(MAX_MESSAGE_BYTES / 2 + 1)), RangeError);
    assert.equal(client.sendRaw('é'.repeat(MAX_MESSAGE_BYTES / 2)), true);
  });

  test('sending before connect() or after close() throws', async () => {
    const { client } = makeClient();
    assert.throws(() => client.send('x'), /connect\(\) first/);
    await opened(client);
    client.close();
    assert.throws(() => client.send('x'), /closed/);
  });

  test('close() discards queued messages', async () => {
    const { client } = makeClient();
    client.connect();
    client.send('lost');
    client.close();
    assert.equal(client.queued, 0);
  });
});

describe('keepalive', () => {
  test('defaults stay well inside API Gateway idle (10 min) and max age (2 h)', () => {
    assert.ok(DEFAULTS.keepaliveInterval <= API_GATEWAY_IDLE_TIMEOUT_MS / 2);
    assert.ok(DEFAULTS.maxConnectionAge < API_GATEWAY_MAX_CONNECTION_MS);
    assert.deepEqual(DEFAULTS.keepaliveMessage, { action: 'ping' });
  });

  test('pings after keepaliveInterval without sending, and again after each interval', async () => {
    const { client } = makeClient();
    const ws = await opened(client);
    mock.timers.tick(DEFAULTS.keepaliveInterval - 1);
    assert.deepEqual(ws.sent, []);
    mock.timers.tick(1);
    assert.deepEqual(ws.sentJSON, [{ action: 'ping' }]);
    mock.timers.tick(DEFAULTS.keepaliveInterval);
    assert.equal(ws.sent.length, 2);
  });

  test('every send pushes the next ping back', async () => {
    const { client } = makeClient({ keepaliveInterval: 1000 });
    const ws = await opened(client);
    mock.timers.tick(900);
    client.send('chat_message');
    mock.timers.tick(900);
    assert.deepEqual(ws.sentJSON, [{ action: 'chat_message' }]);
    mock.timers.tick(100);
    assert.deepEqual(ws.sentJSON.at(-1), { action: 'ping' });
  });

  test('a custom keepalive message, or none', async () => {
    const { client } = makeClient({ keepaliveInterval: 1000, keepaliveMessage: { action: 'heartbeat' } });
    const ws = await opened(client);
    mock.timers.tick(1000);
    assert.deepEqual(ws.sentJSON, [{ action: 'heartbeat' }]);
    FakeWebSocket.reset();
    const off = makeClient({ keepaliveInterval: 1000, keepaliveMessage: null }).client;
    const quiet = await opened(off);
    mock.timers.tick(10000);
    assert.deepEqual(quiet.sent, []);
  });

  test('no pings while the connection is down', async () => {
    const { client } = makeClient({ keepaliveInterval: 1000, backoff: { initialDelay: 60000 } });
    const ws = await opened(client);
    ws.serverClose(1006, '');
    mock.timers.tick(5000);
    assert.deepEqual(ws.sent, []);
  });
});

describe('maximum connection age', () => {
  test('the connection is replaced, with a fresh token, before the 2-hour cut', async () => {
    const { client, fetch } = makeClient({ channel: 'general' });
    const events = record(client, ['reconnecting', 'open', 'close']);
    const first = await opened(client);
    mock.timers.tick(DEFAULTS.maxConnectionAge - 1);
    assert.equal(first.readyState, FakeWebSocket.OPEN);
    mock.timers.tick(1);
    assert.deepEqual(first.closedWith, { code: 1000, reason: 'max_age' });
    assert.deepEqual(events.of('reconnecting').at(-1), { attempt: 0, delay: 0, reason: 'max_age' });
    client.send('in_the_gap');
    await flush();
    assert.equal(fetch.calls.length, 2);
    const second = FakeWebSocket.last;
    assert.equal(second.token, 'tok-2');
    second.serverOpen();
    assert.deepEqual(second.sentJSON, [
      { action: '$recover', channels: { general: null } },
      { action: 'in_the_gap' },
    ]);
    assert.deepEqual(events.of('open').at(-1), { channel: 'general', reconnected: true });
    assert.deepEqual(events.of('close'), [], 'the deliberate close of the old socket is not reported');
  });

  test('API Gateway closing at 2 hours (1001) is followed by a reconnect', async () => {
    const { client, fetch } = makeClient({ maxConnectionAge: 0 });
    const ws = await opened(client);
    mock.timers.tick(API_GATEWAY_MAX_CONNECTION_MS);
    assert.equal(ws.readyState, FakeWebSocket.OPEN, 'maxConnectionAge 0 disables the client timer');
    ws.serverClose(1001, 'Going away');
    mock.timers.tick(500);
    await flush();
    assert.equal(fetch.calls.length, 2);
    assert.equal(FakeWebSocket.instances.length, 2);
  });
});

describe('incoming messages', () => {
  test('typed events by the "type" field, plus a "message" event for everything', async () => {
    const { client } = makeClient();
    const chats = [];
    const all = [];
    client.onMessage('chat_message', (m) => chats.push(m));
    client.on('message', (m) => all.push(m));
    const ws = await opened(client);
    ws.serverSend({ type: 'chat_message', user: 'alice', text: 'hi' });
    ws.serverSend({ type: 'presence', users: ['alice'] });
    ws.serverSend('not json');
    assert.deepEqual(chats, [{ type: 'chat_message', user: 'alice', text: 'hi' }]);
    assert.deepEqual(all, [
      { type: 'chat_message', user: 'alice', text: 'hi' },
      { type: 'presence', users: ['alice'] },
      'not json',
    ]);
  });

  test('the function on()/onMessage() return removes the listener', async () => {
    const { client } = makeClient();
    const got = [];
    const off = client.onMessage('x', (m) => got.push(m));
    const ws = await opened(client);
    ws.serverSend({ type: 'x', n: 1 });
    off();
    ws.serverSend({ type: 'x', n: 2 });
    assert.deepEqual(got, [{ type: 'x', n: 1 }]);
  });

  test('a custom typeKey', async () => {
    const { client } = makeClient({ typeKey: 'event' });
    const got = [];
    client.onMessage('joined', (m) => got.push(m.user));
    const ws = await opened(client);
    ws.serverSend({ event: 'joined', user: 'bob' });
    assert.deepEqual(got, ['bob']);
  });

  test('error replies from the backend and API Gateway become "error" events', async () => {
    const { client } = makeClient();
    const events = record(client, ['error']);
    const ws = await opened(client);
    ws.serverSend({ error: 'unknown_handler', message: 'No such handler.' });
    ws.serverSend({ message: 'Internal server error', connectionId: 'abc=', requestId: 'r' });
    assert.deepEqual(
      events.of('error').map((e) => [e.kind, e.code, e.message]),
      [
        ['server', 'unknown_handler', 'No such handler.'],
        ['gateway', 'gateway_error', 'Internal server error'],
      ],
    );
  });

  test('once() resolves with the next event', async () => {
    const { client } = makeClient();
    const next = client.once('open');
    await opened(client);
    assert.deepEqual(await next, { channel: null, reconnected: false });
  });

  test('listeners can also use addEventListener with CustomEvent.detail', async () => {
    const { client } = makeClient();
    const got = [];
    client.addEventListener('message:hello', (event) => got.push(event.detail));
    const ws = await opened(client);
    ws.serverSend({ type: 'hello' });
    assert.deepEqual(got, [{ type: 'hello' }]);
  });
});

describe('channels and closing', () => {
  test('setChannel reconnects to the new channel with a token fetched for it', async () => {
    const { client, fetch } = makeClient({ channel: 'general' });
    const first = await opened(client);
    const moved = client.setChannel('random');
    await flush();
    assert.deepEqual(first.closedWith, { code: 1000, reason: 'channel_changed' });
    assert.deepEqual(JSON.parse(fetch.calls[1].init.body), { channel: 'random' });
    const second = FakeWebSocket.last;
    assert.equal(second.query.channel, 'random');
    second.serverOpen();
    await moved;
    assert.equal(client.channel, 'random');
  });

  test('close() closes the socket, stops timers and never reconnects', async () => {
    const { client, fetch } = makeClient();
    const events = record(client, ['close', 'statechange']);
    const ws = await opened(client);
    client.close();
    assert.deepEqual(ws.closedWith, { code: 1000, reason: 'client closed' });
    assert.equal(client.state, 'closed');
    assert.deepEqual(events.of('close'), [
      { code: 1000, reason: 'client closed', wasClean: true, willReconnect: false, opened: true },
    ]);
    await flush();
    mock.timers.tick(API_GATEWAY_MAX_CONNECTION_MS);
    await flush();
    assert.equal(fetch.calls.length, 1);
    assert.equal(ws.sent.length, 0, 'no keepalive after close');
    client.close();
    assert.equal(events.of('close').length, 1, 'closing twice is harmless');
  });

  test('a closed client can connect again', async () => {
    const { client } = makeClient();
    await opened(client);
    client.close();
    await opened(client);
    assert.equal(client.state, 'open');
    assert.equal(FakeWebSocket.instances.length, 2);
  });
});

describe('websocketUrl', () => {
  test('turns http(s) into ws(s) and adds the query', () => {
    assert.equal(websocketUrl('https://x.test/prod', { a: 1, b: null }), 'wss://x.test/prod?a=1');
    assert.equal(websocketUrl('http://127.0.0.1:8001/local'), 'ws://127.0.0.1:8001/local');
    assert.equal(websocketUrl('wss://x.test/p?keep=1', { t: 'a b' }), 'wss://x.test/p?keep=1&t=a+b');
  });
});

describe('history channels', () => {
  const env = (offset, data, epoch = 'E1', channel = 'room') => ({ channel, offset, epoch, data });

  async function tracked(options = {}) {
    const { client } = makeClient({ channel: 'room', ...options });
    const seen = record(client, ['message', 'recovered', 'error']);
    const ws = await opened(client);
    assert.deepEqual(ws.sentJSON, [{ action: '$recover', channels: { room: null } }]);
    ws.serverSend({ type: '$recovered', channel: 'room', epoch: 'E1', offset: 3, recovered: true, messages: [], final: true });
    return { client, ws, seen };
  }

  test('delivers data in order, once; duplicates are dropped', async () => {
    const { client, ws, seen } = await tracked();
    for (const o of [4, 5, 5, 4, 6]) ws.serverSend(env(o, { n: o }));
    assert.deepEqual(seen.of('message'), [{ n: 4 }, { n: 5 }, { n: 6 }]);
    assert.equal(client.duplicatesDropped, 2);
    assert.deepEqual(client.positions, { room: { epoch: 'E1', offset: 6 } });
    assert.deepEqual(seen.of('recovered'), [{ channel: 'room', recovered: true, count: 0 }]);
  });

  test('a short reordering waits; a real gap is recovered from the server', async () => {
    const { ws, seen } = await tracked();
    ws.serverSend(env(5, 5));
    ws.serverSend(env(4, 4)); // arrives late, within gapWait
    assert.deepEqual(seen.of('message'), [4, 5]);
    ws.serverSend(env(8, 8));
    assert.equal(ws.sent.length, 1, 'waits gapWait before asking');
    mock.timers.tick(DEFAULTS.gapWait);
    assert.deepEqual(ws.sentJSON.at(-1), { action: '$recover', channels: { room: { epoch: 'E1', offset: 5 } } });
    ws.serverSend(env(9, 9)); // live while recovering: buffered
    ws.serverSend({
      type: '$recovered', channel: 'room', epoch: 'E1', offset: 9, recovered: true,
      messages: [env(6, 6), env(7, 7), env(8, 8), env(9, 9)], final: true, more: false,
    });
    assert.deepEqual(seen.of('message'), [4, 5, 6, 7, 8, 9]);
  });

  test('after a reconnect the missed messages come first, then live ones, without duplicates', async () => {
    const { client, ws, seen } = await tracked({ backoff: { initialDelay: 10, jitter: 0 } });
    ws.serverSend(env(4, 4));
    ws.serverClose(1001, 'Going away');
    mock.timers.tick(10);
    await flush();
    const second = FakeWebSocket.last;
    second.serverOpen();
    assert.deepEqual(second.sentJSON, [{ action: '$recover', channels: { room: { epoch: 'E1', offset: 4 } } }]);
    second.serverSend(env(25, 25)); // live, before the answer: held back
    const missed = Array.from({ length: 20 }, (_, i) => env(5 + i, 5 + i));
    second.serverSend({ type: '$recovered', channel: 'room', epoch: 'E1', offset: 24, recovered: true, messages: missed.slice(0, 12), final: false });
    second.serverSend({ type: '$recovered', channel: 'room', epoch: 'E1', offset: 24, recovered: true, messages: missed.slice(12), final: true, more: false });
    second.serverSend(env(24, 24)); // a duplicate of a recovered one
    assert.deepEqual(seen.of('message'), Array.from({ length: 22 }, (_, i) => 4 + i));
    assert.deepEqual(seen.of('recovered').at(-1), { channel: 'room', recovered: true, count: 20 });
    assert.equal(client.duplicatesDropped, 1);
  });

  test('history that no longer reaches back is reported; the client continues from the top', async () => {
    const { ws, seen } = await tracked();
    ws.serverSend(env(10, 10));
    mock.timers.tick(DEFAULTS.gapWait);
    ws.serverSend({ type: '$recovered', channel: 'room', epoch: 'E2', offset: 12, recovered: false, reason: 'epoch_changed', messages: [], final: true });
    assert.deepEqual(seen.of('recovered').at(-1), { channel: 'room', recovered: false, reason: 'epoch_changed', count: 0 });
    ws.serverSend(env(13, 13, 'E2'));
    assert.deepEqual(seen.of('message'), [13]);
  });

  test('a first connection delivers what was sent since it opened, then live ones', async () => {
    const { client } = makeClient({ channel: 'room' });
    const seen = record(client, ['message']);
    const ws = await opened(client);
    ws.serverSend(env(8, 8)); // live, before the answer
    ws.serverSend({ type: '$recovered', channel: 'room', epoch: 'E1', offset: 8, recovered: true, messages: [env(7, 7), env(8, 8)], final: true });
    assert.deepEqual(seen.of('message'), [7, 8]);
  });

  test('channels without history stop being asked about; non-envelope messages pass through', async () => {
    const { client } = makeClient({ channel: 'lobby', backoff: { initialDelay: 10, jitter: 0 } });
    const seen = record(client, ['message']);
    const ws = await opened(client);
    ws.serverSend({ type: '$recovered', channel: 'lobby', recovered: false, reason: 'no_history' });
    ws.serverSend({ type: 'chat', text: 'hi' });
    assert.deepEqual(seen.of('message'), [{ type: 'chat', text: 'hi' }]);
    ws.serverClose(1001, '');
    mock.timers.tick(10);
    await flush();
    FakeWebSocket.last.serverOpen();
    assert.deepEqual(FakeWebSocket.last.sentJSON, []);
  });

  test('history: false leaves envelopes alone; positions can be restored', async () => {
    const off = makeClient({ channel: 'room', history: false });
    const seen = record(off.client, ['message']);
    const ws = await opened(off.client);
    assert.deepEqual(ws.sentJSON, []);
    ws.serverSend(env(1, 1));
    assert.deepEqual(seen.of('message'), [env(1, 1)]);
    const restored = makeClient({ channel: 'room', positions: { room: { epoch: 'E1', offset: 41 } } });
    const ws2 = await opened(restored.client);
    assert.deepEqual(ws2.sentJSON, [{ action: '$recover', channels: { room: { epoch: 'E1', offset: 41 } } }]);
  });

  test('$skip counts our own message as seen without showing it', async () => {
    const { client, ws, seen } = await tracked();
    ws.serverSend(env(5, 5));
    ws.serverSend({ type: '$skip', channel: 'room', offset: 4, epoch: 'E1' });
    assert.deepEqual(seen.of('message'), [5]);
    assert.deepEqual(client.positions, { room: { epoch: 'E1', offset: 5 } });
    assert.equal(ws.sent.length, 1, 'no recovery was needed');
  });

  test('requestPresence asks for the member list', async () => {
    const { client } = makeClient({ channel: 'presence-room', history: false });
    const ws = await opened(client);
    client.requestPresence();
    assert.deepEqual(ws.sentJSON, [{ action: '$presence', channel: 'presence-room' }]);
  });
});
