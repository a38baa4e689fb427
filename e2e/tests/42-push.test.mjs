// The message push (消息推送) in the console: the sandbox's mini program (the merchant file's) given
// a Token and EncodingAESKey through its page (never shown anywhere afterwards, only `has_push`),
// the URL to paste into WeChat's console (the handshake answers there), plaintext mode, the
// settings removed; then a genuine `wxa_trade_controlled` push, signed as WeChat signs it, raising
// an alert in the admin's red banner (shown on navigation and by the minute's refresh, never to an
// operator) until acknowledged.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { ADMIN_TOKEN, BASE, adminLogin, api, eventually, launch, newPage } from './helpers.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** Collects the text of every back-office answer the page receives (to look for secrets in). */
function answers(page) {
  const texts = [];
  page.on('response', async (response) => {
    if (!new URL(response.url()).pathname.startsWith('/admin/')) return;
    try {
      texts.push(await response.text());
    } catch {
      // A redirect or an aborted request has no body.
    }
  });
  return texts;
}

/** WeChat's `signature` of a handshake or plaintext push: SHA-1 of the sorted Token, timestamp and nonce. */
function signature(token, timestamp, nonce) {
  return createHash('sha1').update([token, timestamp, nonce].sort().join('')).digest('hex');
}

/** The signed query WeChat adds to the push URL. */
function signedQuery(token, extra = {}) {
  const timestamp = String(Math.floor(Date.now() / 1000));
  const nonce = randomBytes(6).toString('hex');
  return new URLSearchParams({ signature: signature(token, timestamp, nonce), timestamp, nonce, ...extra }).toString();
}

/** POSTs a plaintext JSON push to `url` signed with `token`: the status and the answer's text. */
async function push(url, token, body) {
  const response = await fetch(`${url}?${signedQuery(token)}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: response.status, text: await response.text() };
}

const tradeControlled = (createTime) => ({
  ToUserName: 'gh_x',
  FromUserName: 'o_sys',
  CreateTime: createTime,
  MsgType: 'event',
  Event: 'wxa_trade_controlled',
  msg: '交易管控',
});

async function appOf(appid) {
  const answer = await api('GET', `/admin/apps/${encodeURIComponent(appid)}`, { token: ADMIN_TOKEN });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer;
}

// What the tests share, in order: the sandbox's mini program, its push URL, the plaintext Token.
const shared = {};

describe('message push and alerts in the console', () => {
  test('sets the push settings of the merchant file\'s mini program through its page, never shown back', async () => {
    const cashier = await api('GET', '/sim/cashier');
    assert.equal(cashier.status, 200);
    const appid = cashier.body.appid;
    shared.appid = appid;
    const before = (await appOf(appid)).body;
    assert.equal(before.source, 'file', 'the sandbox\'s mini program comes from the merchant file');
    assert.equal(before.has_push, false);

    const page = await newPage(browser, { width: 1280, height: 1400 });
    await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });
    const seen = answers(page);
    await adminLogin(page, `#/apps/${encodeURIComponent(appid)}`);
    await page.locator('#push-form').waitFor();
    assert.equal(await page.getAttribute('#push-state', 'data-has-push'), 'false');
    assert.equal(await page.textContent('#push-state'), '未设置');

    // The URL to paste into WeChat's console, with a copy button.
    const url = (await page.textContent('#push-url')).trim();
    assert.equal(url, `${BASE}/notify/mp/${appid}`);
    shared.url = url;
    await page.click('#push-url-copy');
    await page.locator('#push-url-status.ok, #push-url-status.error').waitFor();
    if (await page.locator('#push-url-status.ok').count()) {
      assert.equal(await page.evaluate(() => navigator.clipboard.readText()), url);
    }
    // Nothing set yet: no handshake, no push (404, nothing read).
    assert.equal((await fetch(`${url}?${signedQuery('nothing', { echostr: 'x' })}`)).status, 404);

    // The key field is asked for in the encrypted mode only.
    assert.equal(await page.isChecked('#push-mode-encrypted'), true);
    assert.equal(await page.isVisible('#push-encoding_aes_key'), true);
    await page.check('#push-mode-plaintext');
    assert.equal(await page.isVisible('#push-encoding_aes_key'), false);
    await page.check('#push-mode-encrypted');
    assert.equal(await page.isVisible('#push-encoding_aes_key'), true);

    // A key that is not 43 base64 characters: the API's refusal, naming the field, beside the form;
    // both fields are emptied all the same.
    await page.fill('#push-token', 'Token123');
    await page.fill('#push-encoding_aes_key', 'too-short');
    await page.click('#push-form button[type=submit]');
    await page.locator('#push-message.error').waitFor();
    assert.match(await page.textContent('#push-message'), /push_encoding_aes_key/);
    assert.equal(await page.inputValue('#push-token'), '');
    assert.equal(await page.inputValue('#push-encoding_aes_key'), '');
    // The Token is required.
    await page.fill('#push-encoding_aes_key', 'x');
    await page.click('#push-form button[type=submit]');
    await page.locator('#push-message.error', { hasText: 'Token' }).waitFor();

    // The encrypted mode: Token and EncodingAESKey.
    const token = `Tk${randomBytes(8).toString('hex')}`;
    const key = randomBytes(32).toString('base64').slice(0, 43);
    await page.fill('#push-token', token);
    await page.fill('#push-encoding_aes_key', key);
    const patched = page.waitForRequest((r) => r.url().endsWith(`/admin/apps/${appid}`) && r.method() === 'PATCH');
    await page.click('#push-form button[type=submit]');
    assert.deepEqual((await patched).postDataJSON(), { push_token: token, push_encoding_aes_key: key });
    await page.locator('#registry-message', { hasText: `小程序 ${appid} 的消息推送设置已保存` }).waitFor();
    await page.locator('#push-state[data-has-push="true"]', { hasText: '已设置' }).waitFor();
    assert.equal(await page.inputValue('#push-token'), '', 'the Token is never put back');
    assert.equal(await page.inputValue('#push-encoding_aes_key'), '', 'nor the key');
    await page.locator('#push-remove').waitFor();

    // The handshake WeChat makes when the URL is saved answers with this Token only.
    const echostr = randomBytes(8).toString('hex');
    const handshake = await fetch(`${url}?${signedQuery(token, { echostr })}`);
    assert.equal(handshake.status, 200);
    assert.equal(await handshake.text(), echostr);
    assert.equal((await fetch(`${url}?${signedQuery('WrongToken', { echostr })}`)).status, 401);
    // With a key set, a plaintext push is refused as forged.
    assert.equal((await push(url, token, tradeControlled(Math.floor(Date.now() / 1000)))).status, 401);

    // The mini programs' list says it is set.
    await page.click('#nav a[data-view="apps"]');
    await page.locator(`#apps-table tr[data-appid="${appid}"] td[data-has-push="true"]`).waitFor();

    // The values never come back: not in the page, not in any answer, not in the API's views.
    const html = await page.content();
    assert.ok(!html.includes(token) && !html.includes(key), 'the page never holds the Token or the key');
    assert.ok(seen.length > 0);
    for (const text of seen) assert.ok(!text.includes(token) && !text.includes(key), 'no answer carries them');
    const one = await appOf(appid);
    assert.equal(one.body.has_push, true);
    const list = await api('GET', '/admin/apps', { token: ADMIN_TOKEN });
    assert.equal(list.body.apps.find((a) => a.appid === appid).has_push, true);
    for (const text of [JSON.stringify(one.body), JSON.stringify(list.body)]) {
      assert.ok(!text.includes(token) && !text.includes(key));
    }
    page.assertClean();
    await page.context().close();
  });

  test('a restricted mini program raises an alert in the admin\'s banner until acknowledged', async () => {
    const { appid, url } = shared;
    assert.ok(appid, 'the first test ran');

    // Plaintext mode (no key), through the form.
    const page = await newPage(browser, { width: 1280, height: 1200 });
    const seen = answers(page);
    await adminLogin(page, `#/apps/${encodeURIComponent(appid)}`);
    await page.locator('#push-form').waitFor();
    assert.equal(await page.isHidden('#alerts'), true, 'no alert yet');
    const token = `Plain${randomBytes(6).toString('hex')}`;
    await page.check('#push-mode-plaintext');
    await page.fill('#push-token', token);
    const patched = page.waitForRequest((r) => r.url().endsWith(`/admin/apps/${appid}`) && r.method() === 'PATCH');
    await page.click('#push-form button[type=submit]');
    assert.deepEqual((await patched).postDataJSON(), { push_token: token, push_encoding_aes_key: null });
    await page.locator('#registry-message', { hasText: '消息推送设置已保存' }).waitFor();

    // A second admin page, whose clock the test moves: the banner refreshes every minute by itself.
    const watcher = await newPage(browser);
    await watcher.clock.install();
    await adminLogin(watcher, '#/orders');
    await watcher.locator('#orders-table, #view .muted').first().waitFor();
    assert.equal(await watcher.isHidden('#alerts'), true);

    // An operator's console never asks for the alerts.
    const merchant = (await api('GET', '/admin/apps', { token: ADMIN_TOKEN })).body.apps.find((a) => a.appid === appid).mchid;
    const made = await api('POST', '/admin/operators', { token: ADMIN_TOKEN, body: { mchid: merchant, name: '推送测试操作员' } });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const operator = await newPage(browser);
    const operatorCalls = [];
    operator.on('request', (r) => {
      if (new URL(r.url()).pathname.startsWith('/admin/alerts')) operatorCalls.push(r.url());
    });

    // WeChat's push: a wrong signature is refused and raises nothing; the genuine one raises the alert.
    const createTime = Math.floor(Date.now() / 1000);
    assert.equal((await push(url, 'NotTheToken', tradeControlled(createTime))).status, 401);
    assert.deepEqual((await api('GET', '/admin/alerts', { token: ADMIN_TOKEN })).body.alerts, []);
    const pushed = await push(url, token, tradeControlled(createTime));
    assert.equal(pushed.status, 200, pushed.text);
    assert.equal(pushed.text, 'success');
    // The same push again (WeChat retries): still one alert.
    assert.equal((await push(url, token, tradeControlled(createTime))).status, 200);
    const alerts = (await api('GET', '/admin/alerts', { token: ADMIN_TOKEN })).body.alerts;
    assert.equal(alerts.length, 1, JSON.stringify(alerts));
    const [alert] = alerts;
    assert.equal(alert.kind, 'wxa_trade_controlled');
    assert.equal(alert.appid, appid);
    assert.equal(alert.message, '交易管控');
    assert.equal(alert.acknowledged_at, null);
    // Operators are refused there.
    assert.equal((await api('GET', '/admin/alerts', { token: made.body.token })).status, 401);

    // The watcher's banner shows it once a minute has gone by, without navigating.
    assert.equal(await watcher.isHidden('#alerts'), true);
    await watcher.clock.fastForward(61_000);
    const watched = watcher.locator(`#alerts li[data-alert="${alert.id}"]`);
    await watched.waitFor();

    // The first page shows it on the next navigation: kind, mini program, message, time.
    await page.click('#nav a[data-view="orders"]');
    const item = page.locator(`#alerts li[data-alert="${alert.id}"]`);
    await item.waitFor();
    assert.equal(await page.isVisible('#alerts'), true);
    assert.equal(await item.getAttribute('data-kind'), 'wxa_trade_controlled');
    assert.equal(await item.getAttribute('data-appid'), appid);
    assert.match(await item.locator('.alert-kind').textContent(), /交易管控/);
    assert.equal(await item.locator('.alert-appid').textContent(), appid);
    assert.equal(await item.locator('.alert-message').textContent(), '交易管控');
    assert.match(await item.locator('.alert-time').textContent(), /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/);
    assert.equal(await page.locator('#alerts li').count(), 1);
    // On every page of the back office.
    await page.click('#nav a[data-view="merchants"]');
    await page.locator('#merchants-table').waitFor();
    await item.waitFor();

    // The operator logs in: no banner, and no request for it.
    await operator.goto(`${BASE}/`);
    await operator.locator('#login-form').waitFor();
    await operator.fill('#token', made.body.token);
    await operator.click('#login-form button[type=submit]');
    await operator.locator('#whoami', { hasText: merchant }).waitFor();
    await operator.locator('#orders-table, #view .muted').first().waitFor();
    await operator.click('#nav a[data-view="reconciliation"]');
    await operator.waitForTimeout(500);
    assert.equal(await operator.isHidden('#alerts'), true, 'operators never see the banner');
    assert.deepEqual(operatorCalls, [], 'nor ask for the alerts');
    operator.assertClean();
    await operator.context().close();
    await api('DELETE', `/admin/operators/${encodeURIComponent(made.body.id)}`, { token: ADMIN_TOKEN });

    // The English labels.
    await page.click('#lang');
    await page.locator(`#alerts li[data-alert="${alert.id}"] .alert-ack`, { hasText: 'Acknowledge' }).waitFor();
    await page.click('#lang');

    // "知道了": acknowledged, gone from the banner (and the banner with it).
    const acked = page.waitForResponse((r) => r.url().endsWith(`/admin/alerts/${alert.id}/acknowledge`) && r.request().method() === 'POST');
    await item.locator('button', { hasText: '知道了' }).click();
    assert.equal((await acked).status(), 204);
    await item.waitFor({ state: 'detached' });
    assert.equal(await page.isHidden('#alerts'), true);
    assert.deepEqual((await api('GET', '/admin/alerts', { token: ADMIN_TOKEN })).body.alerts, []);
    assert.equal((await api('POST', `/admin/alerts/${alert.id}/acknowledge`, { token: ADMIN_TOKEN })).status, 404);
    // The watcher's banner empties on its next navigation.
    await watcher.evaluate(() => {
      window.location.hash = '#/reconciliation';
    });
    await watched.waitFor({ state: 'detached' });
    assert.equal(await watcher.isHidden('#alerts'), true);
    watcher.assertClean();
    await watcher.context().close();

    // The settings removed through the page: has_push false, and the URL refuses pushes (404).
    await page.goto(`${BASE}/#/apps/${encodeURIComponent(appid)}`);
    await page.locator('#push-remove').waitFor();
    page.once('dialog', (dialog) => dialog.accept());
    const removed = page.waitForRequest((r) => r.url().endsWith(`/admin/apps/${appid}`) && r.method() === 'PATCH');
    await page.click('#push-remove');
    assert.deepEqual((await removed).postDataJSON(), { push_token: null });
    await page.locator('#registry-message', { hasText: '消息推送设置已删除' }).waitFor();
    await page.locator('#push-state[data-has-push="false"]').waitFor();
    assert.equal(await page.locator('#push-remove').count(), 0);
    assert.equal((await appOf(appid)).body.has_push, false);
    await eventually(async () => (await push(url, token, tradeControlled(createTime + 1))).status === 404, { what: 'pushes refused' });

    const html = await page.content();
    assert.ok(!html.includes(token), 'the page never holds the Token');
    for (const text of seen) assert.ok(!text.includes(token), 'no answer carries it');
    page.assertClean();
    await page.context().close();
  });
});
