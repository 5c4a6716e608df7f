// End-to-end scenario of the chat example in a real headless Chromium (Debian's), driven by
// playwright-core. tests/browser/test_chat.py starts the example app and the local gateway and
// runs this script; it can also be run by hand against `scripts/demo`:
//
//   E2E_BASE_URL=http://127.0.0.1:8000 E2E_GATEWAY_URL=http://127.0.0.1:8001 node tests/browser/chat.spec.mjs
//
// It prints one JSON line: {"ok": true, "checks": {...}} or {"ok": false, "step", "error"}.
// Environment: E2E_BASE_URL, E2E_GATEWAY_URL (the gateway's http://host:port, for /_local/),
// E2E_LOGIN_PATH (/login/), E2E_USERS (JSON: {"member": [user, password], "staff": [...]}),
// E2E_PUBLIC_ROOM (general), E2E_PRIVATE_ROOM (private-staff), E2E_ARTIFACTS (test-artifacts),
// E2E_NAME (prefix of screenshot files), APIGW_WS_CHROMIUM (/usr/bin/chromium), and
// E2E_ANNOUNCE_CMD (JSON argv of a command taking the announcement text as last argument,
// e.g. ["python", "scripts/demo.py", "announce"]; the admin broadcast step runs only with it).

import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

import { CHROMIUM_ARGS, CHROMIUM_PATH } from './chromium.mjs';

const env = process.env;
const BASE_URL = env.E2E_BASE_URL || 'http://127.0.0.1:8000';
const GATEWAY_URL = env.E2E_GATEWAY_URL || 'http://127.0.0.1:8001';
const LOGIN_PATH = env.E2E_LOGIN_PATH || '/login/';
const USERS = JSON.parse(env.E2E_USERS || '{"staff": ["alice", "alice"], "member": ["bob", "bob"]}');
const PUBLIC_ROOM = env.E2E_PUBLIC_ROOM || 'general';
const PRIVATE_ROOM = env.E2E_PRIVATE_ROOM || 'private-staff';
const ARTIFACTS = env.E2E_ARTIFACTS || 'test-artifacts';
const NAME = env.E2E_NAME || 'chat';
const TIMEOUT = Number(env.E2E_TIMEOUT_MS || 15000);

const checks = {};
let step = 'start';
const nonce = Math.random().toString(36).slice(2, 8);

function check(name, value) {
  checks[name] = value;
}

async function local(path, init) {
  const response = await fetch(`${GATEWAY_URL}/_local/${path}`, init);
  if (!response.ok) throw new Error(`/_local/${path} answered ${response.status}`);
  return response.json();
}

/**
 * Open gateway connections whose user agent carries `tag`, as {id, channel, token, subprotocol}
 * (`token`: one in the URL, which the client no longer puts there by default).
 */
async function connectionsOf(tag) {
  const { connections } = await local('connections');
  return connections
    .filter((c) => c.state === 'OPEN' && c.userAgent.includes(tag))
    .map((c) => {
      const query = Object.fromEntries(c.query);
      return { id: c.connectionId, channel: query.channel, token: query.ws_token, subprotocol: c.subprotocol };
    });
}

async function waitFor(what, predicate, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function openUser(browser, role) {
  const [username, password] = USERS[role];
  const tag = `apigw-ws-e2e/${role}-${nonce}`;
  const context = await browser.newContext({
    viewport: { width: 1280, height: 760 },
    userAgent: `Mozilla/5.0 (X11; Linux x86_64) Chrome ${tag}`,
  });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const user = { role, username, tag, page, context, tokenRequests: 0, tokens: [], consoleErrors: [] };
  page.on('request', (request) => {
    if (request.method() === 'POST' && /token/i.test(new URL(request.url()).pathname)) user.tokenRequests += 1;
  });
  page.on('response', async (response) => {
    const request = response.request();
    if (request.method() !== 'POST' || !/token/i.test(new URL(request.url()).pathname)) return;
    try {
      const body = await response.json();
      if (body && body.token) user.tokens.push(body.token);
    } catch {
      // not a token answer
    }
  });
  page.on('console', (message) => {
    if (message.type() === 'error') user.consoleErrors.push(message.text());
  });
  page.on('pageerror', (error) => user.consoleErrors.push(String(error)));
  await page.goto(new URL(LOGIN_PATH, BASE_URL).toString());
  if (role === 'staff') await page.screenshot({ path: join(ARTIFACTS, `${NAME}-login.png`) });
  await page.fill('input[name="username"]', username);
  await page.fill('input[name="password"]', password);
  await page.press('input[name="password"]', 'Enter');
  await page.waitForSelector('[data-testid="status"].status-open');
  return user;
}

async function say(user, text) {
  await user.page.fill('[data-testid="composer-input"]', text);
  await user.page.click('[data-testid="composer-send"]');
}

async function sees(user, text) {
  await user.page
    .locator('[data-testid="message-text"]', { hasText: text })
    .first()
    .waitFor({ state: 'visible' });
  return true;
}

async function presence(user) {
  return user.page.locator('[data-testid="presence-user"]').evaluateAll((nodes) => nodes.map((n) => n.dataset.user));
}

async function enterRoom(user, room) {
  await user.page.click(`[data-testid="room-${room}"]`);
}

async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    args: CHROMIUM_ARGS,
  });
  let staff;
  let member;
  try {
    step = 'log in both users';
    staff = await openUser(browser, 'staff');
    member = await openUser(browser, 'member');
    check('both_connected', true);

    step = 'presence lists both users';
    await waitFor('both users in the presence list', async () => {
      const seen = await presence(staff);
      return seen.includes(staff.username) && seen.includes(member.username);
    });
    check('presence', await presence(staff));

    step = 'two users exchange messages';
    const hello = `hello from ${staff.username} ${nonce}`;
    await say(staff, hello);
    check('member_received', await sees(member, hello));
    const reply = `hi ${staff.username}, ${member.username} here ${nonce}`;
    await say(member, reply);
    check('staff_received', await sees(staff, reply));
    await sees(staff, hello);

    step = 'a member is refused from the private room';
    const tokensBeforePrivate = member.tokenRequests;
    await enterRoom(member, PRIVATE_ROOM);
    const notice = member.page.locator('[data-testid="notice"]');
    await notice.waitFor({ state: 'visible' });
    check('refusal_notice', (await notice.textContent()).trim());
    check('member_private_connections', (await connectionsOf(member.tag)).filter((c) => c.channel === PRIVATE_ROOM).length);
    check('member_composer_disabled', await member.page.locator('[data-testid="composer-input"]').isDisabled());
    check('private_attempt_fetched_token', member.tokenRequests > tokensBeforePrivate);
    await member.page.screenshot({ path: join(ARTIFACTS, `${NAME}-refused.png`) });

    step = 'staff may enter the private room';
    await enterRoom(staff, PRIVATE_ROOM);
    await staff.page.waitForSelector('[data-testid="status"].status-open');
    await waitFor('staff connected to the private room', async () =>
      (await connectionsOf(staff.tag)).some((c) => c.channel === PRIVATE_ROOM),
    );
    const secret = `staff-only note ${nonce}`;
    await say(staff, secret);
    check('staff_private_message', await sees(staff, secret));

    step = 'back to the public room';
    await enterRoom(member, PUBLIC_ROOM);
    await member.page.waitForSelector('[data-testid="status"].status-open');
    await enterRoom(staff, PUBLIC_ROOM);
    await staff.page.waitForSelector('[data-testid="status"].status-open');
    await sees(member, hello);
    check('member_never_saw_private', (await member.page.locator('[data-testid="message-text"]', { hasText: secret }).count()) === 0);

    step = 'the gateway drops the member; the client reconnects with a new token';
    const [before] = await waitFor('one open connection of the member', async () => {
      const open = await connectionsOf(member.tag);
      return open.length === 1 && open[0].channel === PUBLIC_ROOM ? open : null;
    });
    const tokensBefore = member.tokenRequests;
    const tokenBefore = member.tokens[member.tokens.length - 1];
    // the token travelled as a subprotocol: not in the URL, and Chromium accepted the
    // server's selection of the plain protocol (issue 17 item 5)
    check('token_not_in_url', before.token === undefined);
    check('subprotocol_selected', before.subprotocol);
    await local(`connections/${encodeURIComponent(before.id)}/close`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ code: 1001, reason: 'Going away' }),
    });
    await waitFor('the member reconnected', async () => {
      const open = await connectionsOf(member.tag);
      return open.length === 1 && open[0].id !== before.id ? open : null;
    });
    await member.page.waitForSelector('[data-testid="status"].status-open');
    const [after] = await connectionsOf(member.tag);
    check('reconnected_new_connection', after.id !== before.id);
    const tokenAfter = member.tokens[member.tokens.length - 1];
    check('reconnected_new_token', Boolean(tokenAfter) && tokenAfter !== tokenBefore);
    check('reconnect_fetched_token', member.tokenRequests - tokensBefore);
    check('reconnected_channel', after.channel);

    step = 'messages keep arriving after the reconnect';
    const later = `still there, ${member.username}? ${nonce}`;
    await say(staff, later);
    check('received_after_reconnect', await sees(member, later));
    const back = `yes, back online ${nonce}`;
    await say(member, back);
    check('sent_after_reconnect', await sees(staff, back));
    await waitFor('presence after reconnect', async () => (await presence(staff)).includes(member.username));

    if (env.E2E_ANNOUNCE_CMD) {
      step = 'an admin broadcast reaches every browser';
      const announcement = `Maintenance at five ${nonce}`;
      const [command, ...args] = JSON.parse(env.E2E_ANNOUNCE_CMD);
      execFileSync(command, [...args, announcement], { stdio: ['ignore', 'pipe', 'pipe'] });
      for (const user of [staff, member]) {
        await user.page.locator('[data-testid="announcement"]', { hasText: announcement }).waitFor({ state: 'visible' });
      }
      check('announcement_everywhere', true);
    }

    step = 'screenshots';
    await staff.page.screenshot({ path: join(ARTIFACTS, `${NAME}-${staff.role}.png`) });
    await member.page.screenshot({ path: join(ARTIFACTS, `${NAME}-${member.role}.png`) });
    check('console_errors', [...staff.consoleErrors, ...member.consoleErrors].filter((e) => !/WebSocket|Failed to load resource/.test(e)));
    return { ok: true, checks };
  } catch (error) {
    for (const user of [staff, member]) {
      if (user) await user.page.screenshot({ path: join(ARTIFACTS, `${NAME}-failure-${user.role}.png`) }).catch(() => {});
    }
    return { ok: false, step, error: String((error && error.stack) || error), checks };
  } finally {
    await browser.close();
  }
}

const result = await main();
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exitCode = result.ok ? 0 : 1;
