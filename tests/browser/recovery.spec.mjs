// Missed-message recovery in a real headless Chromium (issue 14), against the chat example
// behind the local gateway (tests/browser/test_recovery.py starts both):
//
// 1. the member's page is cut off: the browser goes offline and the gateway force-closes its
//    connection; while it is away the staff user posts 20 lines to the room;
// 2. the browser comes back online: the client reconnects, recovers, and the page shows the 20
//    lines exactly once and in order (and says it recovered them);
// 3. the gateway delivers a post and then answers 500 (an ambiguous failure), so the server
//    posts it again: the page shows the line once, and the client counted the duplicate.
//
// Prints one JSON line: {"ok": true, "checks": {...}} or {"ok": false, "step", "error"}.
// Environment as chat.spec.mjs: E2E_BASE_URL, E2E_GATEWAY_URL, E2E_LOGIN_PATH, E2E_USERS,
// E2E_PUBLIC_ROOM, E2E_ARTIFACTS, E2E_NAME, APIGW_WS_CHROMIUM.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

import { CHROMIUM_ARGS, CHROMIUM_PATH } from './chromium.mjs';

const env = process.env;
const BASE_URL = env.E2E_BASE_URL || 'http://127.0.0.1:8000';
const GATEWAY_URL = env.E2E_GATEWAY_URL || 'http://127.0.0.1:8001';
const LOGIN_PATH = env.E2E_LOGIN_PATH || '/login/';
const USERS = JSON.parse(env.E2E_USERS || '{"staff": ["alice", "demo"], "member": ["bob", "demo"]}');
const ROOM = env.E2E_PUBLIC_ROOM || 'room-general';
const ARTIFACTS = env.E2E_ARTIFACTS || 'test-artifacts';
const NAME = `${env.E2E_NAME || 'chat'}-recovery`;
const TIMEOUT = Number(env.E2E_TIMEOUT_MS || 15000);
const MISSED = 20;

const checks = {};
let step = 'start';
const nonce = Math.random().toString(36).slice(2, 8);

async function local(path, init) {
  const response = await fetch(`${GATEWAY_URL}/_local/${path}`, init);
  if (!response.ok) throw new Error(`/_local/${path} answered ${response.status}`);
  return response.json();
}

async function post(path, body) {
  return local(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
}

async function openConnections(tag) {
  const { connections } = await local('connections');
  return connections.filter((c) => c.state === 'OPEN' && c.userAgent.includes(tag)).map((c) => c.connectionId);
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
  const user = { role, username, tag, page, context, consoleErrors: [] };
  page.on('console', (message) => {
    if (message.type() === 'error') user.consoleErrors.push(message.text());
  });
  page.on('pageerror', (error) => user.consoleErrors.push(String(error)));
  await page.goto(new URL(LOGIN_PATH, BASE_URL).toString());
  await page.fill('input[name="username"]', username);
  await page.fill('input[name="password"]', password);
  await page.press('input[name="password"]', 'Enter');
  await page.waitForSelector('[data-testid="status"].status-open');
  if (!(await page.evaluate(() => window.chat.room)).endsWith(ROOM.replace(/^room-/, ''))) {
    await page.click(`[data-testid="room-${ROOM}"]`);
    await page.waitForSelector('[data-testid="status"].status-open');
  }
  return user;
}

async function say(user, text) {
  await user.page.fill('[data-testid="composer-input"]', text);
  await user.page.click('[data-testid="composer-send"]');
}

/** The history offsets the user's client has reached, summed over its channels. */
async function reached(user) {
  return user.page.evaluate(() =>
    Object.values(window.chat.client.positions).reduce((sum, p) => sum + (p.offset || 0), 0),
  );
}

/**
 * Post and wait until the server has taken the line (the sender's client is told the offset
 * it got): API Gateway, like the local gateway, may run a connection's integration calls at
 * once, so lines posted back to back can take offsets in another order than they were typed.
 */
async function sayInOrder(user, text) {
  const before = await reached(user);
  await say(user, text);
  await waitFor(`the server to take "${text}"`, async () => (await reached(user)) > before);
}

/** Texts of the chat lines on the page, in the order shown. */
async function lines(user) {
  return user.page.locator('[data-testid="message-text"]').allTextContents();
}

async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS });
  let staff;
  let member;
  try {
    step = 'log in both users';
    staff = await openUser(browser, 'staff');
    member = await openUser(browser, 'member');
    const first = `before the cut ${nonce}`;
    await say(staff, first);
    await member.page.locator('[data-testid="message-text"]', { hasText: first }).waitFor();

    step = 'the member is cut off: offline, and the gateway closes its connection';
    const [before] = await waitFor('the member connection', async () => {
      const ids = await openConnections(member.tag);
      return ids.length === 1 ? ids : null;
    });
    await member.context.setOffline(true);
    await post(`connections/${encodeURIComponent(before)}/close`, { code: 1001, reason: 'Going away' });
    await member.page.waitForSelector('[data-testid="status"]:not(.status-open)');
    check('member_disconnected', (await openConnections(member.tag)).length === 0);

    step = `${MISSED} lines are posted while the member is away`;
    const missed = Array.from({ length: MISSED }, (_, i) => `missed ${String(i + 1).padStart(2, '0')} ${nonce}`);
    for (const text of missed) await sayInOrder(staff, text);
    await staff.page.locator('[data-testid="message-text"]', { hasText: missed.at(-1) }).waitFor();
    check('member_still_away', (await openConnections(member.tag)).length === 0);

    step = 'back online: the client reconnects and recovers';
    await member.context.setOffline(false);
    await member.page.waitForSelector('[data-testid="status"].status-open', { timeout: 30000 });
    await member.page.locator('[data-testid="message-text"]', { hasText: missed.at(-1) }).waitFor();
    const shown = (await lines(member)).filter((text) => text.endsWith(nonce) && text.startsWith('missed'));
    check('recovered_all_once_in_order', JSON.stringify(shown) === JSON.stringify(missed));
    check('recovered_count', shown.length);
    check(
      'recovery_notice',
      await member.page.locator('.message.system', { hasText: `Recovered ${MISSED} messages` }).count(),
    );
    check('first_line_once', (await lines(member)).filter((text) => text === first).length);

    step = 'a post delivered twice (the gateway answers 500 after delivering) is shown once';
    await post('faults', { inject_5xx_every: 1 });
    const twice = `delivered twice ${nonce}`;
    const dropsBefore = await member.page.evaluate(() => window.chat.client.duplicatesDropped);
    await say(staff, twice);
    await member.page.locator('[data-testid="message-text"]', { hasText: twice }).waitFor();
    await waitFor('the repeated post', async () =>
      (await member.page.evaluate(() => window.chat.client.duplicatesDropped)) > dropsBefore,
    );
    await post('faults', { inject_5xx_every: 0 });
    const stats = await local('stats');
    check('gateway_injected_5xx', stats.management_injected_5xx ?? stats.counters?.management_injected_5xx ?? null);
    check('duplicate_shown_once', (await lines(member)).filter((text) => text === twice).length === 1);
    check('duplicates_dropped', (await member.page.evaluate(() => window.chat.client.duplicatesDropped)) - dropsBefore);
    check('sender_not_echoed', (await lines(staff)).filter((text) => text === twice).length === 1);

    step = 'screenshots';
    await member.page.screenshot({ path: join(ARTIFACTS, `${NAME}-member.png`) });
    check(
      'console_errors',
      [...staff.consoleErrors, ...member.consoleErrors].filter((e) => !/WebSocket|Failed to load resource|ERR_INTERNET_DISCONNECTED/.test(e)),
    );
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

function check(name, value) {
  checks[name] = value;
}

const result = await main();
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exitCode = result.ok ? 0 : 1;
