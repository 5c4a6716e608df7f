// Cross-site WebSocket hijacking in a real headless Chromium (Debian's), driven by
// playwright-core. tests/browser/test_cswsh.py starts the Flask chat behind the local gateway
// and a page on another origin (the "attacker"), then runs this script.
//
// A logged-in victim's browser visits the attacker page, which tries to
//   (a) open `ws://gateway/stage?channel=...&ws_token=...` with a token the victim obtained
//       legitimately on the app (a token the attacker stole), and
//   (b) fetch a token itself from the app's token endpoint with the victim's cookies
//       (`credentials: "include"`): JSON (preflighted), form-encoded (a "simple" request,
//       sent with the cookie), and `mode: "no-cors"`.
// As a control, a second legitimate token opens a socket from the app's own page.
//
// It prints one JSON line: {"ok": true, "checks": {...}} or {"ok": false, "step", "error"}.
// Environment: E2E_BASE_URL (the app), E2E_ATTACKER_URL (the attacker page), E2E_WS_URL
// (ws://host:port/stage), E2E_TOKEN_PATH (/ws/token), E2E_ROOM (room-general), E2E_USER and
// E2E_PASSWORD (alice / demo), E2E_LOGIN_PATH (/login), E2E_ARTIFACTS, E2E_NAME,
// APIGW_WS_CHROMIUM.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

import { CHROMIUM_ARGS, CHROMIUM_PATH } from './chromium.mjs';

const env = process.env;
const BASE_URL = env.E2E_BASE_URL || 'http://127.0.0.1:5000';
const ATTACKER_URL = env.E2E_ATTACKER_URL || 'http://127.0.0.1:5001';
const WS_URL = env.E2E_WS_URL || 'ws://127.0.0.1:8001/local';
const TOKEN_PATH = env.E2E_TOKEN_PATH || '/ws/token';
const LOGIN_PATH = env.E2E_LOGIN_PATH || '/login';
const ROOM = env.E2E_ROOM || 'room-general';
const USER = env.E2E_USER || 'alice';
const PASSWORD = env.E2E_PASSWORD || 'demo';
const ARTIFACTS = env.E2E_ARTIFACTS || 'test-artifacts';
const NAME = env.E2E_NAME || 'cswsh';
const TIMEOUT = Number(env.E2E_TIMEOUT_MS || 15000);

const checks = {};
let step = 'start';

/** In the page: open a WebSocket, report whether it opened and how it closed. */
function tryWebSocket(url) {
  return new Promise((resolve) => {
    const result = { opened: false, error: false, closeCode: null };
    let socket;
    try {
      socket = new WebSocket(url);
    } catch (error) {
      resolve({ ...result, thrown: String(error) });
      return;
    }
    const timer = setTimeout(() => resolve({ ...result, timedOut: true }), 10000);
    socket.onopen = () => {
      result.opened = true;
      socket.close(1000);
    };
    socket.onerror = () => {
      result.error = true;
    };
    socket.onclose = (event) => {
      clearTimeout(timer);
      resolve({ ...result, closeCode: event.code });
    };
  });
}

/** In the page: one fetch; what the page can see of the answer. */
async function tryFetch([url, init]) {
  try {
    const response = await fetch(url, init);
    let text = null;
    try {
      text = await response.text();
    } catch (error) {
      text = `unreadable: ${error}`;
    }
    return { rejected: false, type: response.type, status: response.status, text };
  } catch (error) {
    return { rejected: true, error: String(error) };
  }
}

async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    args: CHROMIUM_ARGS,
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
    context.setDefaultTimeout(TIMEOUT);

    step = 'the victim logs in on the app';
    const app = await context.newPage();
    await app.goto(new URL(LOGIN_PATH, BASE_URL).toString());
    await app.fill('input[name="username"]', USER);
    await app.fill('input[name="password"]', PASSWORD);
    await app.press('input[name="password"]', 'Enter');
    await app.waitForSelector('[data-testid="status"].status-open');
    check('victim_logged_in', true);

    step = 'the app page fetches two tokens legitimately';
    const legit = async () =>
      app.evaluate(
        async ([path, room]) => {
          const csrf = document.querySelector('meta[name="csrf-token"]').content;
          const response = await fetch(path, {
            method: 'POST',
            credentials: 'same-origin',
            headers: { 'Content-Type': 'application/json', 'X-CSRFToken': csrf },
            body: JSON.stringify({ channel: room }),
          });
          return { status: response.status, body: await response.json() };
        },
        [TOKEN_PATH, ROOM],
      );
    const stolen = await legit();
    const control = await legit();
    if (stolen.status !== 200 || control.status !== 200) throw new Error(`token endpoint: ${JSON.stringify([stolen, control])}`);
    check('legit_token_status', stolen.status);

    step = 'the attacker page opens a socket with the stolen token';
    const attacker = await context.newPage();
    await attacker.goto(ATTACKER_URL);
    const wsUrl = `${WS_URL}?channel=${encodeURIComponent(ROOM)}&ws_token=${encodeURIComponent(stolen.body.token)}`;
    check('attacker_origin', await attacker.evaluate(() => location.origin));
    check('attacker_socket', await attacker.evaluate(tryWebSocket, wsUrl));

    step = 'the attacker page asks the token endpoint itself, with the victim cookies';
    const tokenUrl = new URL(TOKEN_PATH, BASE_URL).toString();
    const body = JSON.stringify({ channel: ROOM });
    check(
      'attacker_fetch_json',
      await attacker.evaluate(tryFetch, [
        tokenUrl,
        { method: 'POST', credentials: 'include', headers: { 'Content-Type': 'application/json' }, body },
      ]),
    );
    check(
      'attacker_fetch_form',
      await attacker.evaluate(tryFetch, [
        tokenUrl,
        {
          method: 'POST',
          credentials: 'include',
          headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
          body: `channel=${encodeURIComponent(ROOM)}`,
        },
      ]),
    );
    check(
      'attacker_fetch_no_cors',
      await attacker.evaluate(tryFetch, [
        tokenUrl,
        { method: 'POST', mode: 'no-cors', credentials: 'include', body: `channel=${encodeURIComponent(ROOM)}` },
      ]),
    );
    await attacker.evaluate((results) => {
      const pre = document.createElement('pre');
      pre.id = 'results';
      pre.textContent = JSON.stringify(results, null, 2);
      document.body.appendChild(pre);
    }, checks);
    await attacker.screenshot({ path: join(ARTIFACTS, `${NAME}-attacker.png`), fullPage: true });

    step = 'control: the app page opens a socket with its own token';
    const controlUrl = `${WS_URL}?channel=${encodeURIComponent(ROOM)}&ws_token=${encodeURIComponent(control.body.token)}`;
    check('app_socket', await app.evaluate(tryWebSocket, controlUrl));
    check('ok_steps', true);
    await context.close();
  } finally {
    await browser.close();
  }
}

function check(name, value) {
  checks[name] = value;
}

main().then(
  () => console.log(JSON.stringify({ ok: true, checks })),
  (error) => {
    console.log(JSON.stringify({ ok: false, step, error: String(error && error.stack ? error.stack : error), checks }));
    process.exitCode = 1;
  },
);
