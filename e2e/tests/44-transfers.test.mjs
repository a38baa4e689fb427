// Merchant transfers (商家转账) in the console and the emulator: a user logged in through the
// emulator; the admin makes a transfer to them from the console's form (amount in yuan, the
// scene's report infos, today's budget and per-user cap shown); the user receives it in the
// emulator's 确认收款 sheet, and both the phone and the console follow it to SUCCESS, the console
// with its timeline (who made it and why, WeChat's states, the notification). A second transfer
// is cancelled from the console and shows withdrawn on the phone; then the admin lowers the
// merchant's budget in the limits editor and the form shows the server's refusal.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ADMIN_TOKEN, BASE, adminLogin, api, eventually, launch, newPage, screenshot } from './helpers.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

const yuan = (fen) => `¥${Math.trunc(fen / 100)}.${String(fen % 100).padStart(2, '0')}`;

async function transferAt(no) {
  const answer = await api('GET', `/admin/transfers/${encodeURIComponent(no)}`, { token: ADMIN_TOKEN });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body;
}

async function limitsOf(mchid) {
  const answer = await api('GET', '/admin/transfers/limits', { token: ADMIN_TOKEN });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  const mine = answer.body.find((l) => l.mchid === mchid);
  assert.ok(mine, `limits of ${mchid}: ${JSON.stringify(answer.body)}`);
  return mine;
}

/** The console's form, filled for a 1000 (现金营销) transfer; returns after the submit. */
async function makeTransfer(page, { appid, openid, amount, remark, reason }) {
  await page.locator('#transfer-form').waitFor();
  // Other tests registered more mini programs: the sandbox's is chosen when offered.
  if (await page.locator('#transfer-app').count()) await page.selectOption('#transfer-app', appid);
  await page.fill('#transfer-openid', openid);
  await page.fill('#transfer-amount', amount);
  assert.equal(await page.inputValue('#transfer-scene'), '1000');
  await page.fill('#transfer-infos input[data-info-type="活动名称"]', '新会员有礼');
  await page.fill('#transfer-infos input[data-info-type="奖励说明"]', remark);
  await page.selectOption('#transfer-perception', '现金奖励');
  await page.fill('#transfer-remark', remark);
  await page.fill('#transfer-reason', reason);
  await page.click('#transfer-form button[type=submit]');
}

/** The bill number of the transfer page shown (`#/transfers/{no}`). */
async function shownNo(page) {
  await page.waitForURL(/#\/transfers\/(?!new)[^/?]+$/);
  return decodeURIComponent(new URL(page.url()).hash.replace('#/transfers/', ''));
}

// What the tests share, in order: the emulator's page and its user, the sandbox's mini program.
const shared = {};

describe('merchant transfers in the console and the emulator', () => {
  test('a transfer made in the console is received in the emulator\'s 确认收款 sheet; the console shows SUCCESS with its timeline', async () => {
    const { appid, mchid } = (await api('GET', '/sim/cashier')).body;
    shared.appid = appid;
    shared.mchid = mchid;
    // The payee: a new WeChat user of the sandbox's mini program, logged in through the emulator.
    const phone = await newPage(browser, { width: 1280, height: 900 });
    shared.phone = phone;
    await phone.goto(`${BASE}/emulator`);
    await phone.click('#login-button');
    await phone.locator('.products .product').first().waitFor();
    const openid = (await phone.textContent('#dev-user')).trim();
    assert.match(openid, /^o/);
    shared.openid = openid;
    // Nothing for them yet.
    await phone.click('.tab-bar button[data-tab="me"]');
    await phone.click('#open-transfers');
    await phone.locator('#no-transfers').waitFor();

    // The merchant: the transfers page with today's limits, then the form.
    const before = await limitsOf(mchid);
    const page = await newPage(browser, { width: 1280, height: 1400 });
    await adminLogin(page, '#/orders');
    await page.click('#nav-transfers');
    const row = page.locator(`#limits-table tr[data-limits="${mchid}"]`);
    await row.waitFor();
    assert.equal(await row.locator('[data-field="left"]').textContent(), yuan(before.left_today_fen));
    assert.equal(await row.locator('[data-field="cap"]').textContent(), yuan(before.user_daily_cap_fen));
    await page.click('#new-transfer');
    await page.locator('#transfer-form').waitFor();
    if (await page.locator('#transfer-app').count()) await page.selectOption('#transfer-app', appid);
    // The budget left today and the per-user cap of the chosen mini program's merchant.
    await page.locator(`#transfer-limits[data-left-fen="${before.left_today_fen}"]`).waitFor();
    assert.ok((await page.textContent('#transfer-limits')).includes(yuan(before.user_daily_cap_fen)));
    // The scene's report infos, labelled: 1000 asks for two, 1011 for one.
    assert.deepEqual(await page.$$eval('#transfer-infos input', (inputs) => inputs.map((i) => i.dataset.infoType)), ['活动名称', '奖励说明']);
    await page.selectOption('#transfer-scene', '1011');
    assert.deepEqual(await page.$$eval('#transfer-infos input', (inputs) => inputs.map((i) => i.dataset.infoType)), ['赔付原因']);
    assert.deepEqual(await page.$$eval('#transfer-perception option', (options) => options.map((o) => o.value)), ['', '退款', '商家赔付']);
    await page.selectOption('#transfer-scene', '1000');
    // An amount below 0.10 yuan is refused in the page, before any request; then 1.50 yuan.
    await makeTransfer(page, { appid, openid, amount: '0.05', remark: '新人返现', reason: 'e2e: welcome cash back' });
    await page.locator('#transfer-message.error', { hasText: '0.10' }).waitFor();
    await page.fill('#transfer-amount', '1.50');
    await page.click('#transfer-form button[type=submit]');
    const no = await shownNo(page);
    shared.first = no;
    await page.locator('#transfer-flash', { hasText: no }).waitFor();
    await page.locator('#transfer-status[data-status="WAIT_USER_CONFIRM"]').waitFor();
    assert.equal(await page.getAttribute('#transfer-summary [data-field="amount"]', 'data-fen'), '150', 'integer fen on the wire');
    assert.equal(await page.textContent('#transfer-summary [data-field="amount"] dd'), '¥1.50');
    await page.locator('#transfer-cancel').waitFor();
    const requested = page.locator('#transfer-timeline li[data-kind="requested"]');
    await requested.waitFor();
    assert.equal(await requested.locator('[data-key="operator"]').getAttribute('data-value'), 'admin');
    assert.equal(await requested.locator('[data-key="reason"]').getAttribute('data-value'), 'e2e: welcome cash back');
    const made = await transferAt(no);
    assert.equal(made.amount_fen, 150);
    assert.equal(made.appid, appid);
    assert.deepEqual(made.report_infos, [{ info_type: '活动名称', info_content: '新会员有礼' }, { info_type: '奖励说明', info_content: '新人返现' }]);
    assert.equal(made.perception, '现金奖励');

    // The user: 待收款 lists it; 收款 opens WeChat's confirm sheet.
    await phone.click('.tab-bar button[data-tab="me"]');
    await phone.click('#open-transfers');
    const card = phone.locator(`.transfer-card[data-transfer="${no}"]`);
    await card.waitFor();
    assert.equal(await card.getAttribute('data-status'), 'WAIT_USER_CONFIRM');
    assert.equal(await card.locator('.badge').textContent(), '待收款');
    assert.equal(await card.locator('.transfer-amount').textContent(), '¥1.50');
    await card.locator('.receive').click();
    await phone.locator('#transfer-sheet').waitFor();
    assert.equal(await phone.textContent('#transfer-sheet-title'), '确认收款');
    assert.equal(await phone.textContent('#transfer-amount'), '¥1.50');
    assert.equal(await phone.textContent('#transfer-remark'), '新人返现');
    assert.ok((await phone.textContent('#transfer-merchant')).includes(mchid));
    await screenshot(phone, 'emulator-transfer');
    await phone.click('#transfer-receive');
    // "ok" only says the page was shown: the list follows the transfer until it is final.
    await phone.locator(`.transfer-card[data-transfer="${no}"][data-status="SUCCESS"]`).waitFor({ timeout: 30_000 });
    assert.equal(await card.locator('.badge').textContent(), '已到账');
    assert.equal(await card.locator('.receive').count(), 0);
    // The confirm package is never shown in the developer panel's log.
    const log = await phone.evaluate(() => document.getElementById('dev-log').textContent);
    assert.ok(log.includes('/sim/transfers/confirm'), 'the confirmation is logged');
    const packages = [...log.matchAll(/"package": "([^"]*)"/g)].map((m) => m[1]);
    assert.ok(packages.length >= 1 && packages.every((p) => p === '…'), JSON.stringify(packages));

    // The console follows it to SUCCESS, with WeChat's notification in the timeline.
    await page.click('#transfer-refresh');
    await page.locator('#transfer-status[data-status="SUCCESS"]').waitFor({ timeout: 30_000 });
    assert.equal(await page.locator('#transfer-cancel').count(), 0, 'a final transfer cannot be cancelled');
    const success = page.locator('#transfer-timeline li[data-kind="state"][data-state="SUCCESS"]');
    await success.waitFor();
    assert.ok(['notification', 'query'].includes(await success.getAttribute('data-via')));
    assert.match(await success.textContent(), /转账成功/);
    assert.notEqual(await page.textContent('#transfer-summary [data-field="finished"] dd'), '');
    const done = await transferAt(no);
    assert.equal(done.status, 'SUCCESS');
    assert.equal((await limitsOf(mchid)).used_today_fen, before.used_today_fen + 150);
    await page.click('#lang');
    await page.locator('#transfer-status .badge', { hasText: 'Succeeded' }).waitFor();
    await page.click('#lang');
    await page.locator('#transfer-status .badge', { hasText: '转账成功' }).waitFor();
    await screenshot(page, 'backoffice-transfer', { fullPage: true });
    page.assertClean();
    phone.assertClean();
  });

  test('a second transfer is cancelled from the console; the emulator shows it withdrawn', async () => {
    const { phone, appid, mchid, openid } = shared;
    assert.ok(phone, 'the first test opened the emulator');
    const before = await limitsOf(mchid);
    const page = await newPage(browser, { width: 1280, height: 1200 });
    await adminLogin(page, '#/transfers/new');
    await makeTransfer(page, { appid, openid, amount: '2.00', remark: '活动奖励', reason: 'e2e: to be cancelled' });
    const no = await shownNo(page);
    await page.locator('#transfer-status[data-status="WAIT_USER_CONFIRM"]').waitFor();
    assert.equal((await limitsOf(mchid)).left_today_fen, before.left_today_fen - 200, 'reserved');

    page.once('dialog', (dialog) => dialog.accept());
    await page.click('#transfer-cancel');
    await page.locator('#transfer-flash').waitFor();
    await page.locator('#transfer-status[data-status="CANCELLED"]').waitFor({ timeout: 30_000 });
    const cancel = page.locator('#transfer-timeline li[data-kind="cancel_requested"]');
    await cancel.waitFor();
    assert.equal(await cancel.locator('[data-key="via"]').getAttribute('data-value'), 'admin');
    assert.equal(await page.locator('#transfer-cancel').count(), 0);
    assert.equal((await transferAt(no)).status, 'CANCELLED');
    assert.equal((await limitsOf(mchid)).left_today_fen, before.left_today_fen, 'the amount is given back');

    // The list, by state.
    await page.click('.view-head a.back');
    await page.locator(`#transfers-table tr[data-transfer="${no}"][data-status="CANCELLED"]`).waitFor();
    await page.click('#transfer-filters a[data-filter="SUCCESS"]');
    await page.locator(`#transfers-table tr[data-transfer="${shared.first}"]`).waitFor();
    assert.equal(await page.locator(`#transfers-table tr[data-transfer="${no}"]`).count(), 0);
    assert.ok((await page.$$eval('#transfers-table tbody tr', (rows) => rows.map((r) => r.dataset.status))).every((s) => s === 'SUCCESS'));

    // The user sees it withdrawn, with nothing to receive.
    await phone.click('.tab-bar button[data-tab="me"]');
    await phone.click('#open-transfers');
    const card = phone.locator(`.transfer-card[data-transfer="${no}"]`);
    await card.waitFor();
    assert.equal(await card.getAttribute('data-status'), 'CANCELLED');
    assert.equal(await card.locator('.badge').textContent(), '已撤销');
    assert.equal(await card.locator('.receive').count(), 0);
    page.assertClean();
    phone.assertClean();
  });

  test('over the daily budget: the limits editor lowers it and the form shows the server\'s refusal', async () => {
    const { appid, mchid, openid } = shared;
    const before = await limitsOf(mchid);
    const page = await newPage(browser, { width: 1280, height: 1200 });
    await adminLogin(page, '#/transfers');
    await page.click(`#limits-table button[data-edit-limits="${mchid}"]`);
    await page.locator('#limits-form').waitFor();
    assert.equal(await page.inputValue('#limits-budget'), yuan(before.daily_budget_fen).slice(1));
    // One yuan left today.
    const budget = before.used_today_fen + 100;
    try {
      await page.fill('#limits-budget', yuan(budget).slice(1));
      await page.click('#limits-form button[type=submit]');
      await page.locator('#transfer-flash', { hasText: '¥1.00' }).waitFor();
      const row = page.locator(`#limits-table tr[data-limits="${mchid}"]`);
      assert.equal(await row.locator('[data-field="left"]').textContent(), '¥1.00');
      const saved = await limitsOf(mchid);
      assert.equal(saved.daily_budget_fen, budget);
      assert.equal(saved.own, true);
      await screenshot(page, 'backoffice-transfers', { fullPage: true });

      const count = (await api('GET', `/admin/transfers?openid=${encodeURIComponent(openid)}`, { token: ADMIN_TOKEN })).body.transfers.length;
      await page.click('#new-transfer');
      await makeTransfer(page, { appid, openid, amount: '2.00', remark: '超额测试', reason: 'e2e: over the budget' });
      await page.locator('#transfer-message.error', { hasText: 'HTTP 409' }).waitFor();
      assert.match(await page.textContent('#transfer-message'), /daily transfer budget: 100 fen left/);
      assert.match(page.url(), /#\/transfers\/new$/, 'the form stays');
      await screenshot(page, 'backoffice-transfer-refused', { fullPage: true });
      const after = (await api('GET', `/admin/transfers?openid=${encodeURIComponent(openid)}`, { token: ADMIN_TOKEN })).body.transfers.length;
      assert.equal(after, count, 'nothing made');

      // What fits is made (another request: another bill number).
      await page.fill('#transfer-amount', '1.00');
      await page.click('#transfer-form button[type=submit]');
      const no = await shownNo(page);
      await page.locator('#transfer-status[data-status="WAIT_USER_CONFIRM"]').waitFor();
      assert.equal((await transferAt(no)).amount_fen, 100);
      assert.equal((await limitsOf(mchid)).left_today_fen, 0);
      page.assertClean();
    } finally {
      // The sandbox's merchant gets its budget back for whatever runs next.
      const restored = await eventually(async () => {
        const answer = await api('PUT', `/admin/transfers/limits/${mchid}`, {
          token: ADMIN_TOKEN,
          body: { daily_budget_fen: before.daily_budget_fen, user_daily_cap_fen: before.user_daily_cap_fen },
        });
        return answer.status === 200 ? answer : null;
      }, { what: 'the limits restored' });
      assert.equal(restored.body.daily_budget_fen, before.daily_budget_fen);
    }
  });
});
