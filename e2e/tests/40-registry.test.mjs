// Several merchants and mini programs through the console: a second merchant made by the
// simulator, registered in the back office from its files (PEMs and the p12 chosen as files), its
// mini program registered and chosen in the emulator, a purchase there, the order in the back
// office under that merchant (and its filter), an operator created with its token shown once,
// the console used with that token (that merchant's orders only), the operator revoked.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ADMIN_TOKEN, BASE, adminLogin, api, eventually, launch, newPage, screenshot } from './helpers.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

// What the tests share, in order: the simulator's second merchant, its order, its operator.
const second = {};

/** The field of the merchant's `merchant.json` as a path beside it. */
const beside = (file, field) => join(second.dir, file[field]);

describe('the registry in the console', () => {
  test('registers a second merchant from its files, then its mini program', async () => {
    const made = await api('POST', '/sim/merchants', { token: ADMIN_TOKEN, body: { key_mode: 'public_key' } });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    Object.assign(second, { mchid: made.body.mchid, appid: made.body.appid, dir: made.body.merchant_dir });
    const file = JSON.parse(readFileSync(join(second.dir, 'merchant.json'), 'utf8'));
    assert.equal(file.mchid, second.mchid);
    // The simulator's mini program list is open (the emulator's choice) and holds no secret.
    const simApps = await api('GET', '/sim/apps');
    assert.equal(simApps.status, 200);
    assert.ok(simApps.body.apps.some((a) => a.appid === second.appid && a.mchid === second.mchid));
    assert.ok(!JSON.stringify(simApps.body).includes(file.app_secret));
    assert.equal((await api('POST', '/sim/merchants', { body: {} })).status, 401, 'making merchants needs the admin token');

    const page = await newPage(browser, { width: 1280, height: 1200 });
    await adminLogin(page, '#/merchants');
    await page.locator('#merchants-table').waitFor();
    assert.equal(await page.locator('#merchants-table tbody tr').count(), 1, 'the sandbox merchant only');
    await page.locator('#merchants-table tbody tr td', { hasText: '配置文件' }).first().waitFor();

    const fill = async ({ withCert }) => {
      await page.fill('#m-mchid', second.mchid);
      await page.fill('#m-name', '第二家商户');
      await page.selectOption('#m-kind', 'direct');
      await page.selectOption('#m-api_version', 'v3');
      await page.fill('#m-merchant_serial', file.merchant_serial);
      await page.fill('#m-api_v2_key', file.api_v2_key);
      await page.fill('#m-api_v3_key', file.api_v3_key);
      await page.setInputFiles('#m-apiclient_key-file', beside(file, 'apiclient_key'));
      if (withCert) await page.setInputFiles('#m-apiclient_cert-file', beside(file, 'apiclient_cert'));
      await page.setInputFiles('#m-apiclient_cert_p12-file', beside(file, 'apiclient_cert_p12'));
      await page.setInputFiles('#m-platform_cert-file', beside(file, 'platform_cert'));
      await page.fill('#m-wechatpay_public_key_id', file.wechatpay_public_key_id);
      await page.setInputFiles('#m-wechatpay_public_key-file', beside(file, 'wechatpay_public_key'));
    };
    const emptied = async () => {
      assert.equal(await page.inputValue('#m-api_v2_key'), '');
      assert.equal(await page.inputValue('#m-api_v3_key'), '');
      for (const id of ['apiclient_key', 'apiclient_cert', 'apiclient_cert_p12', 'platform_cert', 'wechatpay_public_key']) {
        assert.equal(await page.locator(`#m-${id}-file`).evaluate((el) => el.files.length), 0, id);
      }
    };

    // Without its certificate: the API's message names the field, and the secrets are cleared.
    await fill({ withCert: false });
    await page.click('#merchant-form button[type=submit]');
    await page.locator('#m-message.error').waitFor();
    assert.match(await page.textContent('#m-message'), /apiclient_cert/);
    await emptied();

    await fill({ withCert: true });
    const posted = page.waitForRequest((r) => r.url().endsWith('/admin/merchants') && r.method() === 'POST');
    await page.click('#merchant-form button[type=submit]');
    const sent = (await posted).postDataJSON();
    // The files were read in the page: PEMs as text, the p12 in base64.
    assert.equal(sent.apiclient_key, readFileSync(beside(file, 'apiclient_key'), 'utf8'));
    assert.equal(sent.apiclient_cert_p12, readFileSync(beside(file, 'apiclient_cert_p12')).toString('base64'));
    assert.ok(sent.wechatpay_public_key.includes('BEGIN PUBLIC KEY'));
    assert.equal(sent.sp_appid, undefined, 'no sp_appid for a direct merchant');
    await page.locator('#registry-message', { hasText: `已注册商户 ${second.mchid}` }).waitFor();
    const row = page.locator(`#merchants-table tr[data-mchid="${second.mchid}"]`);
    await row.waitFor();
    assert.equal(await row.getAttribute('data-enabled'), 'true');
    assert.ok((await row.textContent()).includes(file.wechatpay_public_key_id), 'its key facts');
    await emptied();
    const html = await page.content();
    for (const secret of [file.api_v2_key, file.api_v3_key]) assert.ok(!html.includes(secret), 'no secret shown back');
    await screenshot(page, 'backoffice-merchants');

    // Its page: disabled and enabled again, renamed with the same form in PATCH mode.
    await row.locator('a').click();
    await page.locator(`#merchant-summary[data-mchid="${second.mchid}"]`).waitFor();
    await page.click(`#merchant-summary button[data-toggle="${second.mchid}"]`);
    await page.locator('#merchant-summary[data-enabled="false"]').waitFor();
    assert.equal((await api('GET', `/admin/merchants/${second.mchid}`, { token: ADMIN_TOKEN })).body.enabled, false);
    await page.click(`#merchant-summary button[data-toggle="${second.mchid}"]`);
    await page.locator('#merchant-summary[data-enabled="true"]').waitFor();
    await page.fill('#mp-name', '第二家商户（华东）');
    await page.fill('#mp-api_v3_key', file.api_v3_key);
    const patched = page.waitForRequest((r) => r.method() === 'PATCH');
    await page.click('#merchant-patch-form button[type=submit]');
    assert.deepEqual(Object.keys((await patched).postDataJSON()).sort(), ['api_v3_key', 'name'], 'only what was filled in');
    await page.locator('#registry-message', { hasText: `商户 ${second.mchid} 已更新` }).waitFor();
    assert.equal(await page.inputValue('#mp-api_v3_key'), '');
    assert.equal((await api('GET', `/admin/merchants/${second.mchid}`, { token: ADMIN_TOKEN })).body.name, '第二家商户（华东）');

    // Its mini program.
    await page.goto(`${BASE}/#/apps`);
    await page.locator('#app-form').waitFor();
    await page.fill('#a-appid', second.appid);
    await page.fill('#a-name', '第二家小店');
    await page.fill('#a-app_secret', file.app_secret);
    await page.selectOption('#a-mchid', second.mchid);
    await page.click('#app-form button[type=submit]');
    await page.locator('#registry-message', { hasText: second.appid }).waitFor();
    const app = page.locator(`#apps-table tr[data-appid="${second.appid}"]`);
    await app.waitFor();
    assert.equal(await app.getAttribute('data-mchid'), second.mchid);
    assert.ok(!(await page.content()).includes(file.app_secret), 'the AppSecret is not shown back');
    await screenshot(page, 'backoffice-apps');
    page.assertClean();
  });

  test('the emulator runs the chosen mini program and pays its merchant', async () => {
    // The registry reaches the server's routing within moments.
    await eventually(async () => {
      const user = await api('POST', '/sim/users', { body: { appid: second.appid } });
      return (await api('POST', '/api/login', { body: { code: user.body.code, appid: second.appid } })).status === 200;
    }, { what: 'the second mini program served' });

    const page = await newPage(browser, { width: 1280, height: 900 });
    await page.goto(`${BASE}/emulator`);
    await page.locator('#login-button').waitFor();
    await page.selectOption('#app-select', second.appid);
    await page.locator('#login-app', { hasText: second.appid }).waitFor();
    const login = page.waitForRequest((r) => r.url().endsWith('/api/login'));
    await page.click('#login-button');
    assert.equal((await login).postDataJSON().appid, second.appid, 'the login names the mini program');
    await page.locator('.products .product').first().waitFor();
    await page.click('.product[data-sku="coffee"] .plus');
    await page.click('#checkout');
    await page.click('#pay-button');
    await page.locator('#cashier').waitFor({ state: 'visible' });
    assert.match(await page.textContent('#cashier-merchant'), new RegExp(second.mchid), 'the cashier names the second merchant');
    await page.click('#cashier-confirm');
    await page.locator('#order-page[data-status="SUCCESS"]').waitFor({ timeout: 30_000 });
    second.order = await page.getAttribute('#order-page', 'data-order');
    await screenshot(page, 'emulator-second-app');
    page.assertClean();
  });

  test('the back office shows the order under its merchant and filters by merchant', async () => {
    const page = await newPage(browser);
    await adminLogin(page, '#/orders');
    const row = page.locator(`#orders-table tr[data-order="${second.order}"]`);
    await row.waitFor();
    assert.equal(await row.getAttribute('data-mchid'), second.mchid);
    assert.equal(await row.getAttribute('data-appid'), second.appid);
    const first = (await api('GET', '/sim/merchant', { token: ADMIN_TOKEN })).body.mchid;
    assert.ok(await page.locator(`#orders-table tr[data-mchid="${first}"]`).count() >= 1, 'both merchants listed');

    await page.locator(`#orders-merchant option[value="${second.mchid}"]`).waitFor({ state: 'attached' });
    await page.selectOption('#orders-merchant', second.mchid);
    await page.waitForFunction((mchid) => {
      const rows = [...document.querySelectorAll('#orders-table tbody tr')];
      return location.hash.includes(`mchid=${mchid}`) && rows.length >= 1 && rows.every((r) => r.dataset.mchid === mchid);
    }, second.mchid);
    await page.click('.filters a[data-filter="SUCCESS"]');
    await page.waitForFunction((mchid) => location.hash.includes('status=SUCCESS') && location.hash.includes(`mchid=${mchid}`), second.mchid);
    await page.locator(`#orders-table tr[data-order="${second.order}"]`).waitFor();
    await screenshot(page, 'backoffice-orders-merchant');

    await page.click(`#orders-table tr[data-order="${second.order}"] a`);
    await page.locator('#order-summary [data-field="mchid"]', { hasText: second.mchid }).waitFor();
    assert.ok((await page.textContent('#order-summary [data-field="appid"]')).includes(second.appid));
    page.assertClean();
  });

  test('an operator\'s token, shown once, sees that merchant\'s orders only, until revoked', async () => {
    const page = await newPage(browser);
    await adminLogin(page, '#/operators');
    await page.locator('#operator-form').waitFor();
    await page.selectOption('#o-mchid', second.mchid);
    await page.fill('#o-name', '华东店长');
    await page.click('#operator-form button[type=submit]');
    const shown = page.locator('#operator-token');
    await shown.waitFor();
    const token = (await shown.textContent()).trim();
    assert.ok(token.length >= 20, token);
    assert.match(await page.textContent('.token-once'), /只显示这一次/);
    await page.locator(`#operators-table tr[data-mchid="${second.mchid}"][data-revoked="false"]`).waitFor();
    assert.ok(!(await page.textContent('#operators-table')).includes(token), 'the list never holds a token');
    await screenshot(page, 'backoffice-operator-token');
    // Once: the list, reloaded, has no token any more.
    await page.reload();
    await page.locator('#operators-table').waitFor();
    assert.equal(await page.locator('#operator-token').count(), 0);
    assert.ok(!(await page.content()).includes(token));

    const operator = await newPage(browser);
    await operator.goto(`${BASE}/`);
    await operator.locator('#login-form').waitFor();
    await operator.fill('#token', token);
    await operator.click('#login-form button[type=submit]');
    await operator.locator('#orders-table').waitFor();
    await operator.locator('#whoami', { hasText: second.mchid }).waitFor();
    for (const hidden of ['merchants', 'apps', 'operators', 'stats', 'wxacode', 'sandbox']) {
      assert.equal(await operator.isVisible(`#nav a[data-view="${hidden}"]`), false, hidden);
    }
    // Its merchant's reconciliation is open to it (41-registry-edit tests that page).
    assert.equal(await operator.isVisible('#nav a[data-view="reconciliation"]'), true);
    const mchids = await operator.$$eval('#orders-table tbody tr', (rows) => rows.map((r) => r.dataset.mchid));
    assert.ok(mchids.length >= 1 && mchids.every((m) => m === second.mchid), mchids.join());
    await operator.locator(`#orders-table tr[data-order="${second.order}"]`).waitFor();
    assert.equal(await operator.locator('#orders-merchant').count(), 0, 'no merchant filter for an operator');
    await screenshot(operator, 'backoffice-operator');
    // The order and its refund form, without the admin's buttons; admin pages lead back to orders.
    await operator.click(`#orders-table tr[data-order="${second.order}"] a`);
    await operator.locator('#refund-form').waitFor();
    assert.equal(await operator.locator('#revoke-sessions').count(), 0);
    await operator.goto(`${BASE}/#/merchants`);
    await operator.waitForFunction(() => location.hash === '#/orders');
    await operator.locator('#orders-table').waitFor();
    operator.assertClean();

    // Revoked: the token is refused from then on.
    page.on('dialog', (dialog) => dialog.accept());
    await page.click(`#operators-table tr[data-mchid="${second.mchid}"] button.revoke`);
    await page.locator(`#operators-table tr[data-mchid="${second.mchid}"][data-revoked="true"]`).waitFor();
    assert.equal((await api('GET', '/admin/whoami', { token })).status, 401);
    page.assertClean();
  });

  test('a service provider\'s sub-merchants are added and disabled on its page and offered to its mini programs', async () => {
    // A provider registered through the API from another simulator merchant's files.
    const made = (await api('POST', '/sim/merchants', { token: ADMIN_TOKEN, body: {} })).body;
    const dir = made.merchant_dir;
    const file = JSON.parse(readFileSync(join(dir, 'merchant.json'), 'utf8'));
    const text = (field) => readFileSync(join(dir, file[field]), 'utf8');
    const registered = await api('POST', '/admin/merchants', {
      token: ADMIN_TOKEN,
      body: {
        mchid: made.mchid,
        name: '服务商',
        kind: 'provider',
        sp_appid: made.appid,
        api_version: 'v3',
        api_v2_key: file.api_v2_key,
        api_v3_key: file.api_v3_key,
        merchant_serial: file.merchant_serial,
        apiclient_key: text('apiclient_key'),
        apiclient_cert: text('apiclient_cert'),
        wechatpay_public_key_id: file.wechatpay_public_key_id,
        wechatpay_public_key: text('wechatpay_public_key'),
      },
    });
    assert.equal(registered.status, 201, JSON.stringify(registered.body));

    const sub = '1900009001';
    const page = await newPage(browser);
    await adminLogin(page, `#/merchants/${made.mchid}`);
    await page.locator('#sub-merchant-form').waitFor();
    await page.fill('#sub-sub_mchid', sub);
    await page.fill('#sub-name', '华东特约店');
    await page.click('#sub-merchant-form button[type=submit]');
    await page.locator('#registry-message', { hasText: `已添加特约商户 ${sub}` }).waitFor();
    await page.locator(`#sub-merchants-table tr[data-sub-mchid="${sub}"][data-enabled="true"]`).waitFor();
    await page.click(`#sub-merchants-table button[data-toggle="${sub}"]`);
    await page.locator(`#sub-merchants-table tr[data-sub-mchid="${sub}"][data-enabled="false"]`).waitFor();
    const subs = (await api('GET', `/admin/merchants/${made.mchid}/sub-merchants`, { token: ADMIN_TOKEN })).body.sub_merchants;
    assert.deepEqual(subs.map((x) => [x.sub_mchid, x.enabled]), [[sub, false]]);
    // A direct merchant has none: its page has no such section.
    await page.goto(`${BASE}/#/merchants/${second.mchid}`);
    await page.locator(`#merchant-summary[data-mchid="${second.mchid}"]`).waitFor();
    assert.equal(await page.locator('#sub-merchant-form').count(), 0);

    // The mini-program form offers the provider's sub-merchants once the provider is chosen.
    await page.goto(`${BASE}/#/apps`);
    await page.locator('#app-form').waitFor();
    await page.selectOption('#a-mchid', second.mchid);
    assert.equal(await page.isVisible('#a-sub_mchid'), false, 'not for a direct merchant');
    await page.selectOption('#a-mchid', made.mchid);
    await page.locator(`#a-sub_mchid option[value="${sub}"]`).waitFor({ state: 'attached' });
    assert.equal(await page.isVisible('#a-sub_mchid'), true);
    page.assertClean();
  });
});
