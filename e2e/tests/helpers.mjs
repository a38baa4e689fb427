// Shared by the end-to-end tests: the server under test (started by scripts/test-e2e), a
// headless Chromium page that fails the test on any script error or CSP violation, HTTP helpers
// that play the mini program and WeChat, screenshots.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests with scripts/test-e2e`);
  return value;
}

export const BASE = required('E2E_BASE_URL');
export const ADMIN_TOKEN = required('E2E_ADMIN_TOKEN');
export const DATABASE = process.env.E2E_DATABASE || '';
const CHROMIUM = process.env.E2E_CHROMIUM || '/usr/bin/chromium';
const SCREENSHOTS = process.env.E2E_SCREENSHOTS || '';

/** A browser for one test file. */
export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--lang=zh-CN', '--font-render-hinting=none'],
  });
}

/**
 * A fresh page (own storage) whose console errors, uncaught exceptions and CSP violations are
 * collected; `page.problems()` returns them, and `assertClean()` fails on any.
 */
export async function newPage(browser, { width = 1280, height = 860 } = {}) {
  const context = await browser.newContext({
    viewport: { width, height },
    deviceScaleFactor: 1,
    locale: 'zh-CN',
    timezoneId: 'Asia/Shanghai',
  });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (err) => problems.push(`uncaught: ${err.message}`));
  page.on('console', (msg) => {
    // 4xx answers the tests provoke on purpose (a wrong token, a refused signature) are logged
    // by Chromium as failed resources; anything else at error level is a defect.
    if (msg.type() === 'error' && !/status of 4\d\d/.test(msg.text())) problems.push(`console: ${msg.text()}`);
  });
  page.setDefaultTimeout(20_000);
  page.problems = () => problems;
  page.assertClean = () => assert.deepEqual(problems, [], 'the page reported errors');
  return page;
}

/**
 * Writes a screenshot of `page` to docs/screenshots/NAME.png (or E2E_SCREENSHOTS), once no
 * toast is showing, from the top of the page.
 */
export async function screenshot(page, name, { fullPage = false } = {}) {
  if (!SCREENSHOTS) return;
  mkdirSync(SCREENSHOTS, { recursive: true });
  const toast = page.locator('#toast');
  if (await toast.count()) await toast.waitFor({ state: 'hidden' });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage, animations: 'disabled', caret: 'hide', scale: 'css' });
}

/** A JSON call to the server under test. */
export async function api(method, path, { body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(`${BASE}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  return { status: response.status, body: json, headers: response.headers };
}

/**
 * A new simulated WeChat user logged in to the mini-program API: {openid, token}; with `appid`,
 * a user of that mini program (needed once several are registered).
 */
export async function customer({ appid } = {}) {
  const user = await api('POST', '/sim/users', { body: appid ? { appid } : {} });
  assert.equal(user.status, 200, JSON.stringify(user.body));
  const login = await api('POST', '/api/login', { body: appid ? { code: user.body.code, appid } : { code: user.body.code } });
  assert.equal(login.status, 200, JSON.stringify(login.body));
  return { openid: user.body.openid, token: login.body.token };
}

/** An unpaid order of `who`: the answer of POST /api/orders. */
export async function order(who, items) {
  const created = await api('POST', '/api/orders', { token: who.token, body: { items } });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  return created.body;
}

/** Pays `created` as the WeChat client would, and waits until the notification was delivered. */
export async function pay(who, created) {
  const paid = await api('POST', '/sim/pay', { body: { ...created.payment, openid: who.openid } });
  assert.equal(paid.status, 200, JSON.stringify(paid.body));
  assert.equal(paid.body.errMsg, 'requestPayment:ok');
  await api('POST', '/sim/notifications/flush', { token: ADMIN_TOKEN });
  return paid.body;
}

/** Polls `check` until it returns a truthy value (then returns it), or fails after `ms`. */
export async function eventually(check, { ms = 30_000, every = 250, what = 'the condition' } = {}) {
  const until = Date.now() + ms;
  let last;
  for (;;) {
    last = await check();
    if (last) return last;
    if (Date.now() > until) assert.fail(`${what} did not happen within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, every));
  }
}

/** Opens the back office and enters the admin token. */
export async function adminLogin(page, hash = '#/orders') {
  await page.goto(`${BASE}/${hash}`);
  await page.locator('#login-form').waitFor();
  await page.fill('#token', ADMIN_TOKEN);
  await page.click('#login-form button[type=submit]');
  await page.locator('#login').waitFor({ state: 'hidden' });
}

/** Runs one SQL statement on the server's SQLite file (to make a deliberate mismatch). */
export function sqlite(statement, ...params) {
  assert.ok(DATABASE, 'E2E_DATABASE is not set');
  execFileSync('python3', [
    '-c',
    'import sqlite3, sys, json\n'
      + 'c = sqlite3.connect(sys.argv[1], timeout=30)\n'
      + 'n = c.execute(sys.argv[2], json.loads(sys.argv[3])).rowcount\n'
      + 'c.commit()\n'
      + 'print(n)\n',
    DATABASE,
    statement,
    JSON.stringify(params),
  ]);
}

/** Today in GMT+8, `yyyy-mm-dd` (the bill's day). */
export function todayCst() {
  return new Date(Date.now() + 8 * 3600 * 1000).toISOString().slice(0, 10);
}
