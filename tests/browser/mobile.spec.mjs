// The chat example on a phone-sized screen (390 x 844) in headless Chromium: rooms and people
// stay reachable, the top bar (title, name, Log out) neither wraps nor clips, nothing answers
// 404 (favicon included), and Log out logs out. tests/browser/test_mobile.py runs it against
// `scripts/demo`; by hand:
//
//   E2E_BASE_URL=http://127.0.0.1:8000 E2E_LOGIN_PATH=/login node tests/browser/mobile.spec.mjs
//
// Prints one JSON line: {"ok": true, "checks": {...}} or {"ok": false, "step", "error"}.
// Environment: E2E_BASE_URL, E2E_LOGIN_PATH, E2E_USER / E2E_PASSWORD (alice / demo),
// E2E_ARTIFACTS (test-artifacts), E2E_NAME (screenshot prefix), APIGW_WS_CHROMIUM.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

import { CHROMIUM_ARGS, CHROMIUM_PATH } from './chromium.mjs';

const env = process.env;
const BASE_URL = env.E2E_BASE_URL || 'http://127.0.0.1:8000';
const LOGIN_PATH = env.E2E_LOGIN_PATH || '/login/';
const USER = env.E2E_USER || 'alice';
const PASSWORD = env.E2E_PASSWORD || 'demo';
const ARTIFACTS = env.E2E_ARTIFACTS || 'test-artifacts';
const NAME = env.E2E_NAME || 'chat';
const WIDTH = 390;
const HEIGHT = 844;

const checks = {};
let step = 'start';

function expect(name, ok, detail) {
  checks[name] = detail === undefined ? ok : detail;
  if (!ok) throw new Error(`${name}: ${JSON.stringify(detail)}`);
}

/** The element's box, and whether it lies fully inside the viewport. */
async function box(page, selector) {
  const handle = await page.waitForSelector(selector, { state: 'visible' });
  const b = await handle.boundingBox();
  const inside = b && b.x >= 0 && b.y >= 0 && b.x + b.width <= WIDTH + 0.5 && b.y + b.height <= HEIGHT + 0.5;
  return { ...b, inside };
}

const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS });
try {
  mkdirSync(ARTIFACTS, { recursive: true });
  const context = await browser.newContext({
    viewport: { width: WIDTH, height: HEIGHT },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
  });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  const failed = [];
  page.on('response', (response) => {
    if (response.status() >= 400) failed.push(`${response.status()} ${new URL(response.url()).pathname}`);
  });

  step = 'log in';
  await page.goto(new URL(LOGIN_PATH, BASE_URL).toString());
  await page.fill('input[name="username"]', USER);
  await page.fill('input[name="password"]', PASSWORD);
  await page.press('input[name="password"]', 'Enter');
  await page.waitForSelector('[data-testid="status"].status-open');
  await page.waitForSelector('[data-testid="presence"] li');

  step = 'top bar';
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
  expect('no sideways scrolling of the page', overflow <= WIDTH, overflow);
  const logout = await box(page, 'text=Log out');
  expect('Log out inside the screen', logout.inside, logout);
  expect('Log out on one line', logout.height < 48, logout.height);
  const me = await box(page, '[data-testid="me"]');
  expect('name inside the screen', me.inside, me);
  const topbar = await box(page, '.topbar');
  expect('top bar is one line', topbar.height < 64, topbar.height);

  step = 'rooms reachable';
  const roomLinks = await page.$$('[data-testid^="room-"]');
  expect('room links', roomLinks.length >= 2, roomLinks.length);
  const first = await box(page, '[data-testid^="room-"]');
  expect('first room visible', first.inside, first);
  // The last room is off to the right in the strip: scrolled to and opened like on a phone.
  const last = roomLinks[roomLinks.length - 1];
  await last.scrollIntoViewIfNeeded();
  const lastBox = await last.boundingBox();
  expect('last room scrolls into the screen', lastBox.x + lastBox.width <= WIDTH + 0.5, lastBox);
  await last.click();
  const active = await page.$eval('[aria-current="page"]', (el) => el.dataset.testid);
  expect('switching rooms works', active === (await last.getAttribute('data-testid')), active);
  await page.waitForSelector('[data-testid="status"].status-open');
  await page.waitForSelector('[data-testid="presence"] li');

  step = 'people reachable';
  const people = await box(page, '[data-testid="presence"]');
  expect('people visible', people.inside, people);
  const names = await page.$$eval('[data-testid="presence"] li', (items) => items.map((li) => li.textContent));
  expect('I am listed', names.some((text) => text.includes(USER)), names);

  step = 'chat';
  const text = `hello from a phone ${Date.now()}`;
  await page.fill('[data-testid="composer-input"]', text);
  await page.click('[data-testid="composer-send"]');
  await page.waitForSelector(`text=${text}`);
  const composer = await box(page, '[data-testid="composer-send"]');
  expect('send button inside the screen', composer.inside, composer);

  step = 'screenshot';
  await page.screenshot({ path: join(ARTIFACTS, `${NAME}-390.png`) });
  expect('no 4xx/5xx responses (favicon included)', failed.length === 0, failed);

  step = 'log out';
  await page.click('text=Log out');
  await page.waitForSelector('input[name="username"]');
  await page.goto(BASE_URL);
  await page.waitForSelector('input[name="username"]');
  checks['logged out'] = true;
  console.log(JSON.stringify({ ok: true, checks }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, step, error: String(error && error.stack || error), checks }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
