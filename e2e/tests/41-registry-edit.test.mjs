// Editing the registry in the console: a service provider registered through the form (its
// sp_appid asked for only then), a sub-merchant edited on its provider's page, a merchant's name
// and API version changed and its private key rotated (moving from the platform certificate to the
// WeChat Pay public key in the same save), a mini program renamed, given a new AppSecret (never
// shown anywhere afterwards) and moved to a provider's sub-merchant and back, the reconciliation's
// merchant selector (the admin's choice, an operator's own merchant), and orders' sub_mchid.
//
// The merchants are made by the simulator (POST /sim/merchants), as in 40-registry.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ADMIN_TOKEN, BASE, adminLogin, api, eventually, launch, newPage } from './helpers.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** A new merchant of the simulator: its ids, its `merchant.json`, and its files' paths and texts. */
async function simMerchant(body = {}) {
  const made = await api('POST', '/sim/merchants', { token: ADMIN_TOKEN, body });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  const dir = made.body.merchant_dir;
  const file = JSON.parse(readFileSync(join(dir, 'merchant.json'), 'utf8'));
  return {
    mchid: made.body.mchid,
    appid: made.body.appid,
    file,
    path: (field) => join(dir, file[field]),
    text: (field) => readFileSync(join(dir, file[field]), 'utf8'),
  };
}

/** Registers `m` through the API as a direct merchant; `publicKey` false: the platform certificate only. */
async function register(m, { name, publicKey = true } = {}) {
  const body = {
    mchid: m.mchid,
    name,
    kind: 'direct',
    api_version: 'v3',
    api_v2_key: m.file.api_v2_key,
    api_v3_key: m.file.api_v3_key,
    merchant_serial: m.file.merchant_serial,
    apiclient_key: m.text('apiclient_key'),
    apiclient_cert: m.text('apiclient_cert'),
    platform_cert: m.text('platform_cert'),
  };
  if (publicKey) {
    body.wechatpay_public_key_id = m.file.wechatpay_public_key_id;
    body.wechatpay_public_key = m.text('wechatpay_public_key');
  }
  const registered = await api('POST', '/admin/merchants', { token: ADMIN_TOKEN, body });
  assert.equal(registered.status, 201, JSON.stringify(registered.body));
  return registered.body;
}

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

// What the tests share, in order.
const shared = {};

describe('editing the registry in the console', () => {
  test('registers a service provider with its sp_appid through the form, asked for only then', async () => {
    const p = await simMerchant();
    shared.provider = p;
    const page = await newPage(browser, { width: 1280, height: 1200 });
    await adminLogin(page, '#/merchants');
    await page.locator('#merchant-form').waitFor();
    // Direct (the default): no sp_appid.
    assert.equal(await page.isVisible('#m-sp_appid'), false);
    await page.selectOption('#m-kind', 'provider');
    assert.equal(await page.isVisible('#m-sp_appid'), true);
    await page.selectOption('#m-kind', 'direct');
    assert.equal(await page.isVisible('#m-sp_appid'), false);

    const fill = async (spAppid) => {
      await page.fill('#m-mchid', p.mchid);
      await page.fill('#m-name', '华南服务商');
      await page.selectOption('#m-kind', 'provider');
      await page.fill('#m-sp_appid', spAppid);
      await page.fill('#m-merchant_serial', p.file.merchant_serial);
      await page.fill('#m-api_v2_key', p.file.api_v2_key);
      await page.fill('#m-api_v3_key', p.file.api_v3_key);
      await page.setInputFiles('#m-apiclient_key-file', p.path('apiclient_key'));
      await page.setInputFiles('#m-apiclient_cert-file', p.path('apiclient_cert'));
      await page.fill('#m-wechatpay_public_key_id', p.file.wechatpay_public_key_id);
      await page.setInputFiles('#m-wechatpay_public_key-file', p.path('wechatpay_public_key'));
    };
    // A provider without its sp_appid is refused; the API's message is shown beside the form.
    await fill('');
    await page.click('#merchant-form button[type=submit]');
    await page.locator('#m-message.error').waitFor();
    assert.match(await page.textContent('#m-message'), /sp_appid/);
    assert.equal(await page.inputValue('#m-api_v3_key'), '', 'the secrets are cleared after a refusal');

    await fill(p.appid);
    const posted = page.waitForRequest((r) => r.url().endsWith('/admin/merchants') && r.method() === 'POST');
    await page.click('#merchant-form button[type=submit]');
    const sent = (await posted).postDataJSON();
    assert.equal(sent.kind, 'provider');
    assert.equal(sent.sp_appid, p.appid);
    await page.locator('#registry-message', { hasText: `已注册商户 ${p.mchid}` }).waitFor();
    const row = page.locator(`#merchants-table tr[data-mchid="${p.mchid}"]`);
    await row.waitFor();
    assert.ok((await row.textContent()).includes(p.appid), 'its sp_appid in the list');
    const detail = (await api('GET', `/admin/merchants/${p.mchid}`, { token: ADMIN_TOKEN })).body;
    assert.equal(detail.kind, 'provider');
    assert.equal(detail.sp_appid, p.appid);
    // A direct merchant's sp_appid is null.
    const merchants = (await api('GET', '/admin/merchants', { token: ADMIN_TOKEN })).body.merchants;
    assert.ok(merchants.filter((m) => m.kind === 'direct').every((m) => m.sp_appid === null), 'direct merchants: sp_appid null');

    // Its page shows the sp_appid and edits it.
    await row.locator('a').click();
    await page.locator(`#merchant-summary[data-mchid="${p.mchid}"]`).waitFor();
    assert.ok((await page.textContent('#merchant-summary [data-field="sp_appid"]')).includes(p.appid));
    const newSpAppid = `wx${p.mchid}sp`.slice(0, 32);
    await page.fill('#mp-sp_appid', newSpAppid);
    const patched = page.waitForRequest((r) => r.method() === 'PATCH');
    await page.click('#merchant-patch-form button[type=submit]');
    assert.deepEqual((await patched).postDataJSON(), { sp_appid: newSpAppid });
    await page.locator('#registry-message', { hasText: `商户 ${p.mchid} 已更新` }).waitFor();
    await page.locator('#merchant-summary [data-field="sp_appid"]', { hasText: newSpAppid }).waitFor();
    page.assertClean();
  });

  test('a sub-merchant is edited on its provider\'s page: name, sub_appid, enabled', async () => {
    const p = shared.provider;
    const sub = '1900009101';
    const added = await api('POST', `/admin/merchants/${p.mchid}/sub-merchants`, {
      token: ADMIN_TOKEN,
      body: { sub_mchid: sub, name: '华南特约店' },
    });
    assert.equal(added.status, 201, JSON.stringify(added.body));
    shared.sub = sub;

    const page = await newPage(browser, { width: 1280, height: 1200 });
    await adminLogin(page, `#/merchants/${p.mchid}`);
    await page.locator(`#sub-merchants-table tr[data-sub-mchid="${sub}"]`).waitFor();
    assert.equal(await page.isVisible('#sub-edit-form'), false, 'hidden until a row is edited');
    await page.click(`#sub-merchants-table button[data-edit="${sub}"]`);
    await page.locator('#sub-edit-form').waitFor();
    assert.equal(await page.inputValue('#se-name'), '华南特约店');
    assert.equal(await page.inputValue('#se-sub_appid'), '');
    assert.equal(await page.isChecked('#se-enabled'), true);

    // An invalid sub_appid: the API's message beside the form.
    await page.fill('#se-sub_appid', 'not an appid!');
    await page.click('#sub-edit-form button[type=submit]');
    await page.locator('#se-message.error').waitFor();
    assert.match(await page.textContent('#se-message'), /sub_appid/);

    await page.fill('#se-name', '华南特约店（二号）');
    await page.fill('#se-sub_appid', 'wxsubapp000000001');
    await page.uncheck('#se-enabled');
    const patched = page.waitForRequest((r) => r.method() === 'PATCH');
    await page.click('#sub-edit-form button[type=submit]');
    const sent = await patched;
    assert.ok(sent.url().endsWith(`/admin/merchants/${p.mchid}/sub-merchants/${sub}`), sent.url());
    assert.deepEqual(sent.postDataJSON(), { name: '华南特约店（二号）', sub_appid: 'wxsubapp000000001', enabled: false });
    await page.locator('#registry-message', { hasText: `特约商户 ${sub} 已更新` }).waitFor();
    const row = page.locator(`#sub-merchants-table tr[data-sub-mchid="${sub}"][data-enabled="false"]`);
    await row.waitFor();
    assert.ok((await row.textContent()).includes('华南特约店（二号）'));
    assert.ok((await row.textContent()).includes('wxsubapp000000001'));

    // Emptied sub_appid: none (null); enabled again.
    await page.click(`#sub-merchants-table button[data-edit="${sub}"]`);
    await page.fill('#se-sub_appid', '');
    await page.check('#se-enabled');
    const again = page.waitForRequest((r) => r.method() === 'PATCH');
    await page.click('#sub-edit-form button[type=submit]');
    assert.deepEqual((await again).postDataJSON(), { sub_appid: null, enabled: true });
    await page.locator(`#sub-merchants-table tr[data-sub-mchid="${sub}"][data-enabled="true"]`).waitFor();
    const subs = (await api('GET', `/admin/merchants/${p.mchid}/sub-merchants`, { token: ADMIN_TOKEN })).body.sub_merchants;
    assert.deepEqual(subs.map((s) => [s.sub_mchid, s.name, s.sub_appid, s.enabled]), [[sub, '华南特约店（二号）', null, true]]);
    page.assertClean();
  });

  test('a merchant is renamed, then its private key rotated and moved to the public key in one save', async () => {
    // X is registered with the platform certificate only; its new key pair is Y's.
    const x = await simMerchant();
    const y = await simMerchant();
    await register(x, { name: '旧名商户', publicKey: false });
    shared.direct = x;

    const page = await newPage(browser, { width: 1280, height: 1400 });
    const texts = answers(page);
    await adminLogin(page, `#/merchants/${x.mchid}`);
    await page.locator('#merchant-patch-form').waitFor();
    assert.equal(await page.isVisible('#mp-sp_appid'), false, 'no sp_appid for a direct merchant');

    // Name and API version.
    await page.fill('#mp-name', '新名商户');
    await page.selectOption('#mp-api_version', 'v2');
    let patched = page.waitForRequest((r) => r.method() === 'PATCH');
    await page.click('#merchant-patch-form button[type=submit]');
    assert.deepEqual((await patched).postDataJSON(), { name: '新名商户', api_version: 'v2' });
    await page.locator('#registry-message', { hasText: `商户 ${x.mchid} 已更新` }).waitFor();
    let m = (await api('GET', `/admin/merchants/${x.mchid}`, { token: ADMIN_TOKEN })).body;
    assert.deepEqual([m.name, m.api_version], ['新名商户', 'v2']);
    assert.equal(m.has_platform_cert, true);
    assert.equal(m.public_key_id, null);

    const emptied = async () => {
      for (const id of ['apiclient_key', 'apiclient_cert', 'wechatpay_public_key']) {
        assert.equal(await page.inputValue(`#mp-${id}`), '', id);
        // A locator waits for the field: the page may be drawing the form again after the save.
        assert.equal(await page.locator(`#mp-${id}-file`).evaluate((el) => el.files.length), 0, id);
      }
    };
    // A private key that is not the new certificate's: refused, the message beside the form,
    // the fields emptied, nothing changed.
    await page.fill('#mp-merchant_serial', y.file.merchant_serial);
    await page.setInputFiles('#mp-apiclient_key-file', x.path('apiclient_key'));
    await page.setInputFiles('#mp-apiclient_cert-file', y.path('apiclient_cert'));
    await page.click('#merchant-patch-form button[type=submit]');
    await page.locator('#mp-message.error').waitFor();
    assert.match(await page.textContent('#mp-message'), /apiclient_key/);
    await emptied();

    // The new key pair, and the WeChat Pay public key instead of the platform certificate.
    await page.fill('#mp-merchant_serial', y.file.merchant_serial);
    await page.fill('#mp-apiclient_key', y.text('apiclient_key'));
    await page.setInputFiles('#mp-apiclient_cert-file', y.path('apiclient_cert'));
    await page.fill('#mp-wechatpay_public_key_id', x.file.wechatpay_public_key_id);
    await page.setInputFiles('#mp-wechatpay_public_key-file', x.path('wechatpay_public_key'));
    await page.check('#mp-remove_platform_cert');
    patched = page.waitForRequest((r) => r.method() === 'PATCH');
    await page.click('#merchant-patch-form button[type=submit]');
    const sent = (await patched).postDataJSON();
    assert.deepEqual(Object.keys(sent).sort(),
      ['apiclient_cert', 'apiclient_key', 'merchant_serial', 'platform_cert', 'wechatpay_public_key', 'wechatpay_public_key_id'],
      'one PATCH, only what was filled in');
    assert.equal(sent.platform_cert, null, 'the platform certificate removed');
    assert.equal(sent.apiclient_key, y.text('apiclient_key').trim());
    await page.locator('#registry-message', { hasText: `商户 ${x.mchid} 已更新` }).waitFor();
    await emptied();
    m = (await api('GET', `/admin/merchants/${x.mchid}`, { token: ADMIN_TOKEN })).body;
    assert.equal(m.merchant_serial.toUpperCase(), y.file.merchant_serial.toUpperCase());
    assert.equal(m.public_key_id, x.file.wechatpay_public_key_id);
    assert.equal(m.has_platform_cert, false);
    const summary = await page.textContent('#merchant-summary');
    assert.ok(summary.toUpperCase().includes(y.file.merchant_serial.toUpperCase()), 'the new serial shown');
    assert.ok(summary.includes(x.file.wechatpay_public_key_id));
    // No secret in the page or in any answer.
    const keyBody = (pem) => pem.split('\n').filter((l) => l && !l.startsWith('-----'))[1];
    const html = await page.content();
    for (const secret of [keyBody(y.text('apiclient_key')), keyBody(x.text('apiclient_key')), x.file.api_v2_key, x.file.api_v3_key]) {
      assert.ok(!html.includes(secret), 'no secret in the page');
      assert.ok(texts.every((t) => !t.includes(secret)), 'no secret in an answer');
    }
    page.assertClean();
  });

  test('a mini program is renamed and given a new AppSecret (never shown again), then moved to a sub-merchant and back', async () => {
    const x = shared.direct;
    const made = await api('POST', '/admin/apps', {
      token: ADMIN_TOKEN,
      body: { appid: x.appid, name: '旧名小店', app_secret: x.file.app_secret, mchid: x.mchid },
    });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const newSecret = `s3cret-${Date.now()}-${Math.random().toString(36).slice(2)}`;

    const page = await newPage(browser, { width: 1280, height: 1000 });
    const texts = answers(page);
    await adminLogin(page, '#/apps');
    await page.locator(`#apps-table tr[data-appid="${x.appid}"] a[href^="#/apps/"]`).click();
    await page.locator(`#app-summary[data-appid="${x.appid}"]`).waitFor();
    await page.locator('#app-edit-form').waitFor();
    assert.equal(await page.inputValue('#ae-name'), '旧名小店');
    assert.equal(await page.inputValue('#ae-app_secret'), '', 'the AppSecret is never shown');
    assert.equal(await page.getAttribute('#ae-app_secret', 'type'), 'password');
    assert.equal(await page.inputValue('#ae-mchid'), x.mchid);
    assert.equal(await page.isVisible('#ae-sub_mchid'), false, 'no sub-merchant for a direct merchant');

    await page.fill('#ae-name', '新名小店');
    await page.fill('#ae-app_secret', newSecret);
    let patched = page.waitForRequest((r) => r.method() === 'PATCH');
    await page.click('#app-edit-form button[type=submit]');
    const sent = await patched;
    assert.ok(sent.url().endsWith(`/admin/apps/${x.appid}`));
    assert.deepEqual(sent.postDataJSON(), { name: '新名小店', app_secret: newSecret });
    await page.locator('#registry-message', { hasText: `小程序 ${x.appid} 已更新` }).waitFor();
    await page.locator('#app-summary [data-field="name"]', { hasText: '新名小店' }).waitFor();
    assert.equal(await page.inputValue('#ae-app_secret'), '');

    // Empty means unchanged: the name only.
    await page.fill('#ae-name', '新名小店二');
    patched = page.waitForRequest((r) => r.method() === 'PATCH');
    await page.click('#app-edit-form button[type=submit]');
    assert.deepEqual((await patched).postDataJSON(), { name: '新名小店二' });
    await page.locator('#app-summary [data-field="name"]', { hasText: '新名小店二' }).waitFor();

    // To the provider's sub-merchant, then back to the direct merchant (sub_mchid null).
    const p = shared.provider;
    await page.selectOption('#ae-mchid', p.mchid);
    await page.locator(`#ae-sub_mchid option[value="${shared.sub}"]`).waitFor({ state: 'attached' });
    assert.equal(await page.isVisible('#ae-sub_mchid'), true);
    await page.selectOption('#ae-sub_mchid', shared.sub);
    patched = page.waitForRequest((r) => r.method() === 'PATCH');
    await page.click('#app-edit-form button[type=submit]');
    assert.deepEqual((await patched).postDataJSON(), { mchid: p.mchid, sub_mchid: shared.sub });
    await page.locator(`#app-summary[data-mchid="${p.mchid}"]`).waitFor();
    await page.locator(`#ae-sub_mchid option[value="${shared.sub}"]`).waitFor({ state: 'attached' });
    assert.ok((await page.textContent('#app-summary [data-field="sub_mchid"]')).includes(shared.sub));
    assert.equal(await page.inputValue('#ae-sub_mchid'), shared.sub, 'the form shows its sub-merchant');

    await page.selectOption('#ae-mchid', x.mchid);
    assert.equal(await page.isVisible('#ae-sub_mchid'), false);
    patched = page.waitForRequest((r) => r.method() === 'PATCH');
    await page.click('#app-edit-form button[type=submit]');
    assert.deepEqual((await patched).postDataJSON(), { mchid: x.mchid, sub_mchid: null });
    await page.locator(`#app-summary[data-mchid="${x.mchid}"]`).waitFor();

    const app = await api('GET', `/admin/apps/${x.appid}`, { token: ADMIN_TOKEN });
    assert.equal(app.body.name, '新名小店二');
    assert.equal(app.body.has_app_secret, true);
    assert.equal(app.body.sub_mchid, null);
    // The AppSecret, old or new, appears in no page and no answer.
    await page.goto(`${BASE}/#/apps`);
    await page.locator(`#apps-table tr[data-appid="${x.appid}"]`).waitFor();
    const everything = [await page.content(), JSON.stringify(app.body), ...texts,
      JSON.stringify((await api('GET', '/admin/apps', { token: ADMIN_TOKEN })).body),
      JSON.stringify((await api('GET', `/admin/merchants/${x.mchid}`, { token: ADMIN_TOKEN })).body)];
    for (const secret of [newSecret, x.file.app_secret]) {
      assert.ok(everything.every((text) => !text.includes(secret)), 'the AppSecret is never shown back');
    }
    page.assertClean();
  });

  test('the reconciliation page chooses the merchant (?mchid=), an operator sees its own only', async () => {
    const w = await simMerchant();
    await register(w, { name: '对账商户' });
    const first = (await api('GET', '/sim/merchant', { token: ADMIN_TOKEN })).body.mchid;
    const day = new Date(Date.now() + 8 * 3600 * 1000 - 24 * 3600 * 1000).toISOString().slice(0, 10);
    // The registered merchant reaches the server's routing within moments.
    await eventually(async () => {
      const r = await api('GET', `/admin/reconciliation/${day}?mchid=${w.mchid}`, { token: ADMIN_TOKEN });
      return r.status === 200 || r.body?.code === 'bill_not_ready';
    }, { what: `merchant ${w.mchid} reconciled` });

    const page = await newPage(browser, { width: 1280, height: 1000 });
    const calls = [];
    page.on('request', (r) => {
      if (new URL(r.url()).pathname.startsWith('/admin/reconciliation/')) calls.push(r.url());
    });
    await adminLogin(page, `#/reconciliation/${day}`);
    await page.locator(`#recon-merchant option[value="${w.mchid}"]`).waitFor({ state: 'attached' });
    const shown = page.locator('.recon, #bill-not-ready');
    await shown.first().waitFor();
    // As before: no merchant chosen, the first (the merchant file's), which the select shows.
    assert.equal(await page.inputValue('#recon-merchant'), first);
    assert.ok(calls.length >= 1 && calls.every((u) => !u.includes('mchid=')), calls.join());
    if (await page.locator('.recon').count()) assert.equal(await page.getAttribute('.recon', 'data-mchid'), first);

    calls.length = 0;
    await page.selectOption('#recon-merchant', w.mchid);
    await page.waitForFunction((mchid) => location.hash === `#/reconciliation/${document.getElementById('bill-date').value}?mchid=${mchid}`, w.mchid);
    await eventually(async () => calls.some((u) => u.includes(`/admin/reconciliation/${day}?mchid=${w.mchid}`)), { what: 'the call with ?mchid=' });
    await page.locator(`.recon[data-mchid="${w.mchid}"], #bill-not-ready`).first().waitFor();
    assert.equal(await page.inputValue('#recon-merchant'), w.mchid);
    // The refresh and another date keep the merchant.
    calls.length = 0;
    await page.click('#recon-refresh');
    await eventually(async () => calls.some((u) => u.includes(`mchid=${w.mchid}`) && u.includes('refresh=true')), { what: 'the refresh with ?mchid=' });
    await page.locator(`.recon[data-mchid="${w.mchid}"], #bill-not-ready`).first().waitFor();
    assert.equal(await page.inputValue('#recon-merchant'), w.mchid);
    page.assertClean();

    // An operator of W: the page is open to it, its merchant only.
    const created = await api('POST', '/admin/operators', { token: ADMIN_TOKEN, body: { mchid: w.mchid, name: '对账员' } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const operator = await newPage(browser);
    const operatorCalls = [];
    operator.on('request', (r) => operatorCalls.push(new URL(r.url()).pathname));
    await operator.goto(`${BASE}/`);
    await operator.locator('#login-form').waitFor();
    await operator.fill('#token', created.body.token);
    await operator.click('#login-form button[type=submit]');
    await operator.locator('#orders-table, #view .muted').first().waitFor();
    assert.equal(await operator.isVisible('#nav a[data-view="reconciliation"]'), true);
    await operator.click('#nav a[data-view="reconciliation"]');
    await operator.locator('#recon-form').waitFor();
    assert.deepEqual(await operator.$$eval('#recon-merchant option', (os) => os.map((o) => o.value)), [w.mchid]);
    await operator.locator('.recon, #bill-not-ready').first().waitFor();
    if (await operator.locator('.recon').count()) assert.equal(await operator.getAttribute('.recon', 'data-mchid'), w.mchid);
    assert.ok(!operatorCalls.includes('/admin/merchants'), 'an operator never asks for the merchants');
    operator.assertClean();
    await api('DELETE', `/admin/operators/${created.body.id}`, { token: ADMIN_TOKEN });
  });

  test('orders carry sub_mchid (null for a direct merchant\'s), shown only when set', async () => {
    // A user of the merchant file's mini program (several are registered now: the login names it).
    const { appid } = (await api('GET', '/sim/merchant', { token: ADMIN_TOKEN })).body;
    const user = await api('POST', '/sim/users', { body: { appid } });
    assert.equal(user.status, 200, JSON.stringify(user.body));
    const login = await api('POST', '/api/login', { body: { code: user.body.code, appid } });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    const created = await api('POST', '/api/orders', { token: login.body.token, body: { items: [{ sku: 'tea', quantity: 1 }] } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const no = created.body.out_trade_no;
    const one = (await api('GET', `/admin/orders/${no}`, { token: ADMIN_TOKEN })).body;
    assert.ok('sub_mchid' in one.order, 'the order has sub_mchid');
    assert.equal(one.order.sub_mchid, null);
    const list = (await api('GET', '/admin/orders?limit=50', { token: ADMIN_TOKEN })).body.orders;
    const listed = list.find((o) => o.out_trade_no === no);
    assert.ok(listed && 'sub_mchid' in listed && listed.sub_mchid === null);

    const page = await newPage(browser);
    await adminLogin(page, '#/orders');
    const row = page.locator(`#orders-table tr[data-order="${no}"]`);
    await row.waitFor();
    assert.equal(await row.getAttribute('data-sub-mchid'), null);
    assert.equal(await row.locator('.sub-mchid').count(), 0, 'no sub-merchant tag');
    // Any order paid through a sub-merchant is tagged with it.
    for (const o of list.filter((x) => x.sub_mchid)) {
      const tagged = page.locator(`#orders-table tr[data-order="${o.out_trade_no}"]`);
      if (await tagged.count()) assert.ok((await tagged.locator('.sub-mchid').textContent()).includes(o.sub_mchid));
    }
    await row.locator('a').click();
    await page.locator('#order-summary [data-field="mchid"]').waitFor();
    assert.equal(await page.locator('#order-summary [data-field="sub_mchid"]').count(), 0);
    page.assertClean();
  });
});
