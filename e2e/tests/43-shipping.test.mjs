// Shipping (发货信息管理) in the console: an order paid in the emulator, shipped from its back-office
// page in two parcels (a refused submit shown beside the form first; the second parcel "last"),
// until it shows shipped with its two parcels and its shipping information uploaded to WeChat;
// the overdue page listing a paid order not shipped (and not the shipped one), with its hours
// selector; the unsettled page's total in yuan from integer fen; and the buyer confirming receipt
// in the emulator, as WeChat's confirm-receipt component does.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  ADMIN_TOKEN,
  BASE,
  adminLogin,
  api,
  customer,
  eventually,
  launch,
  newPage,
  order,
  pay,
  screenshot,
  sqlite,
} from './helpers.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

const yuan = (fen) => `¥${Math.trunc(fen / 100)}.${String(fen % 100).padStart(2, '0')}`;

async function detailOf(no) {
  const answer = await api('GET', `/admin/orders/${encodeURIComponent(no)}`, { token: ADMIN_TOKEN });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body;
}

/** Waits until the server has the order paid (its shipping state then set). */
async function paidAtServer(no) {
  return eventually(async () => {
    const detail = await detailOf(no);
    return detail.order.status === 'SUCCESS' && detail.order.shipping_state ? detail : null;
  }, { what: `order ${no} paid at the server` });
}

// What the tests share, in order: the emulator's page and its order (shipped), an unshipped order.
const shared = {};

describe('shipping in the console and the emulator', () => {
  test('an order paid in the emulator is shipped in two parcels from its page', async () => {
    // The buyer: the emulator, a new WeChat user, two lines, paid through the cashier.
    const phone = await newPage(browser, { width: 1280, height: 900 });
    shared.phone = phone;
    await phone.goto(`${BASE}/emulator`);
    await phone.click('#login-button');
    await phone.locator('.products .product').first().waitFor();
    for (let i = 0; i < 2; i += 1) await phone.click('.product[data-sku="coffee"] .plus');
    await phone.click('.product[data-sku="tea"] .plus');
    await phone.click('#checkout');
    await phone.click('#pay-button');
    await phone.locator('#cashier').waitFor({ state: 'visible' });
    await phone.click('#cashier-confirm');
    await phone.locator('#order-page[data-status="SUCCESS"]').waitFor({ timeout: 30_000 });
    const no = await phone.getAttribute('#order-page', 'data-order');
    shared.shipped = no;
    const paid = await paidAtServer(no);
    assert.equal(paid.order.delivery, 'express', 'the catalog\'s products are shipped by express');
    assert.equal(paid.order.shipping_state, 'awaiting_shipment');
    // The mini program shows it waiting for the shipment (the page may have drawn before).
    await phone.click('.tab-bar button[data-tab="orders"]');
    await phone.click(`.order-card[data-order="${no}"]`);
    await phone.locator('#order-shipping-state[data-shipping-state="awaiting_shipment"]').waitFor();
    assert.equal(await phone.textContent('#order-shipping-state'), '待发货');
    assert.equal(await phone.locator('#confirm-receipt').count(), 0, 'nothing to confirm before the shipment');

    // The merchant: the order's page, its shipping section.
    const page = await newPage(browser, { width: 1280, height: 1500 });
    await adminLogin(page, `#/orders/${no}`);
    await page.locator('#shipping').waitFor();
    await page.locator('#shipping-state [data-shipping-state="awaiting_shipment"]').waitFor();
    assert.equal(await page.textContent('#shipping-state .badge'), '待发货');
    assert.equal(await page.getAttribute('#shipping-summary [data-field="delivery"]', 'data-delivery'), 'express');
    await page.locator('#shipments-none').waitFor();
    await page.locator('#shipping-upload[data-status=""]').waitFor();
    const companies = await page.$$eval('#ship-company option', (options) => options.map((o) => o.value));
    for (const code of ['SF', 'YTO', 'ZTO', 'STO', 'YD', 'JTSDEXPRESS', 'EMS', 'JD', 'other']) assert.ok(companies.includes(code), code);
    // WeChat's list of the mini program, offered for "other".
    await page.locator('#ship-company[data-loaded="true"]').waitFor();
    assert.ok((await page.$$eval('#ship-companies option', (options) => options.map((o) => o.value))).includes('JTSDEXPRESS'));

    // SF without the receiver's masked phone: refused in the page, before any request.
    await page.selectOption('#ship-company', 'SF');
    await page.fill('#ship-tracking', 'SF1234567890');
    await page.click('#ship-form button[type=submit]');
    await page.locator('#ship-message.error', { hasText: '189****1234' }).waitFor();
    // A tracking number that is not visible ASCII: the API's refusal beside the form, nothing recorded.
    await page.selectOption('#ship-company', 'other');
    await page.locator('#ship-company-other').waitFor({ state: 'visible' });
    await page.fill('#ship-company-other', 'YTO');
    await page.fill('#ship-tracking', '运单 一');
    await page.click('#ship-form button[type=submit]');
    await page.locator('#ship-message.error', { hasText: 'HTTP 400' }).waitFor();
    assert.equal((await detailOf(no)).shipments.length, 0, 'nothing recorded');

    // The first parcel: the two coffees, by YTO.
    const first = `YT${Date.now()}`;
    await page.selectOption('#ship-company', 'YTO');
    await page.fill('#ship-tracking', first);
    await page.fill('#ship-form input.qty[data-sku="coffee"]', '2');
    await page.click('#ship-form button[type=submit]');
    await page.locator('#shipping-state [data-shipping-state="partially_shipped"]').waitFor();
    await page.locator('#ship-result', { hasText: first }).waitFor();
    assert.equal(await page.locator('#shipments-table tbody tr').count(), 1);
    assert.equal(await page.getAttribute('#shipments-table tbody tr', 'data-company'), 'YTO');
    assert.equal(await page.getAttribute('#shipments-table tbody tr', 'data-last'), 'false');
    assert.match(await page.textContent('#shipments-table tbody tr'), /× 2/);
    // Not fully shipped: nothing uploaded yet, and the form is still there.
    await page.locator('#ship-form').waitFor();

    // The second and last parcel: the tea, by ZTO.
    const second = `ZT${Date.now()}`;
    await page.selectOption('#ship-company', 'ZTO');
    await page.fill('#ship-tracking', second);
    await page.fill('#ship-form input.qty[data-sku="tea"]', '1');
    await page.check('#ship-last');
    await page.click('#ship-form button[type=submit]');
    await page.locator('#shipping-state [data-shipping-state="shipped"]').waitFor();
    await page.locator('#shipments-table tbody tr[data-last="true"]').waitFor();
    assert.equal(await page.locator('#shipments-table tbody tr').count(), 2);
    assert.deepEqual(
      await page.$$eval('#shipments-table tbody tr', (rows) => rows.map((r) => r.dataset.tracking)),
      [first, second],
    );
    assert.equal(await page.locator('#ship-form').count(), 0, 'a shipped order has no form');
    // The shipping information goes to WeChat at once (the page follows a pending upload).
    await page.locator('#shipping-upload[data-status="uploaded"]').waitFor({ timeout: 30_000 });
    assert.match(await page.textContent('#shipping-upload'), /已上传/);
    assert.notEqual(await page.textContent('#shipping-summary [data-field="shipped_at"] dd'), '');
    assert.equal(await page.locator('#timeline li[data-kind="shipment"]').count(), 2);
    await page.locator('#timeline li[data-kind="shipping_uploaded"]').waitFor();

    const detail = await detailOf(no);
    assert.equal(detail.order.shipping_state, 'shipped');
    assert.equal(detail.shipments.length, 2);
    assert.equal(detail.shipping_upload.status, 'uploaded');
    const atWechat = await api('GET', `/sim/orders/${no}`, { token: ADMIN_TOKEN });
    assert.equal(atWechat.status, 200, JSON.stringify(atWechat.body));
    const managed = atWechat.body.trade_management;
    assert.equal(managed.order_state, 2, 'WeChat has it shipped, awaiting receipt');
    assert.deepEqual(managed.shipping.shipping_list.map((p) => p.tracking_no), [first, second]);

    await page.click('#lang');
    await page.locator('#shipping-state .badge', { hasText: 'Shipped' }).waitFor();
    await page.locator('#shipping h2', { hasText: 'Shipping' }).waitFor();
    await page.click('#lang');
    await page.locator('#shipping-state .badge', { hasText: '已发货' }).waitFor();
    await page.locator('#shipping').scrollIntoViewIfNeeded();
    await screenshot(page, 'backoffice-shipping', { fullPage: true });
    page.assertClean();
  });

  test('the overdue page lists a paid order not shipped, not a shipped one', async () => {
    // The sandbox's own mini program (others were registered by the registry tests).
    const { appid } = (await api('GET', '/sim/cashier')).body;
    const who = await customer({ appid });
    const created = await order(who, [{ sku: 'sticker', quantity: 1 }]);
    await pay(who, created);
    const no = created.out_trade_no;
    shared.unshipped = no;
    await paidAtServer(no);
    // Both paid three days ago (WeChat's deadline is 48 hours).
    const threeDaysAgo = Date.now() - 72 * 3_600_000;
    sqlite('UPDATE orders SET paid_at = ? WHERE out_trade_no IN (?, ?)', threeDaysAgo, no, shared.shipped);

    const page = await newPage(browser, { width: 1280, height: 1100 });
    await adminLogin(page, '#/orders');
    await page.click('#nav-fulfilment');
    await page.locator('#overdue-count').waitFor();
    assert.equal(await page.inputValue('#overdue-hours'), '48', '48 hours unless chosen');
    await page.locator(`#overdue-table tbody tr[data-order="${no}"]`).waitFor();
    assert.equal(await page.locator(`#overdue-table tbody tr[data-order="${shared.shipped}"]`).count(), 0, 'the shipped order is not overdue');
    const row = page.locator(`#overdue-table tbody tr[data-order="${no}"]`);
    assert.equal(await row.getAttribute('data-shipping-state'), 'awaiting_shipment');
    assert.ok((await row.textContent()).includes(yuan(created.amount_fen)));
    assert.match(await row.textContent(), /7[12] 小时/);
    await screenshot(page, 'backoffice-overdue');

    // A longer delay: paid three days ago is not more than 30 days ago.
    await page.selectOption('#overdue-hours', '720');
    await page.locator('#overdue-count[data-hours="720"]').waitFor();
    assert.equal(await page.locator(`#overdue-table tbody tr[data-order="${no}"]`).count(), 0);
    await page.selectOption('#overdue-hours', '24');
    await page.locator(`#overdue-table tbody tr[data-order="${no}"]`).waitFor();

    // Each row leads to its order, where the form ships it.
    await page.click(`#overdue-table tbody tr[data-order="${no}"] a`);
    await page.locator('#shipping-state [data-shipping-state="awaiting_shipment"]').waitFor();
    await page.locator('#ship-form').waitFor();
    page.assertClean();
  });

  test('the unsettled page shows the money WeChat still holds', async () => {
    const page = await newPage(browser, { width: 1280, height: 1100 });
    await adminLogin(page, '#/overdue');
    await page.click('#fulfilment-tabs a[data-tab="unsettled"]');
    await page.locator('#unsettled-total').waitFor();
    const unsettled = (await api('GET', '/admin/fulfilment/unsettled', { token: ADMIN_TOKEN })).body;
    assert.ok(unsettled.count >= 2, JSON.stringify(unsettled.count));
    assert.equal(await page.textContent('#unsettled-total'), yuan(unsettled.total_fen));
    assert.equal(await page.getAttribute('#unsettled-total', 'data-fen'), String(unsettled.total_fen));
    assert.equal(await page.textContent('#unsettled-count'), String(unsettled.count));
    await page.locator(`#unsettled-table tbody tr[data-order="${shared.unshipped}"]`).waitFor();
    await page.locator(`#unsettled-table tbody tr[data-order="${shared.shipped}"][data-shipping-state="shipped"]`).waitFor();
    await page.click('#lang');
    await page.locator('#fulfilment-tabs a[data-tab="unsettled"]', { hasText: 'Unsettled' }).waitFor();
    await page.click('#lang');
    await screenshot(page, 'backoffice-unsettled');
    page.assertClean();
  });

  test('the buyer confirms receipt of the shipped order in the emulator', async () => {
    const phone = shared.phone;
    assert.ok(phone, 'the first test opened the emulator');
    const no = shared.shipped;
    await phone.click('.tab-bar button[data-tab="orders"]');
    await phone.click(`.order-card[data-order="${no}"]`);
    await phone.locator('#order-shipping-state[data-shipping-state="shipped"]').waitFor();
    assert.equal(await phone.textContent('#order-shipping-state'), '已发货');
    await phone.click('#confirm-receipt');
    // WeChat has the receipt; the server shows what it knows: received / settled once WeChat's push
    // reached it, shipped (with a note) while the mini program has no message-push settings.
    await phone.locator('#receipt-note, #order-shipping-state[data-shipping-state="received"], #order-shipping-state[data-shipping-state="settled"], #modal:not([hidden])').first().waitFor();
    if (await phone.locator('#modal:not([hidden])').count()) {
      assert.fail(`the emulator showed an error: ${await phone.textContent('#modal-title')}: ${await phone.textContent('#modal-text')}`);
    }
    assert.equal(await phone.locator('#confirm-receipt').count(), 0, 'confirmed once');
    const atWechat = await api('GET', `/sim/orders/${no}`, { token: ADMIN_TOKEN });
    assert.equal(atWechat.status, 200, JSON.stringify(atWechat.body));
    assert.ok(atWechat.body.trade_management && atWechat.body.trade_management.confirmed_at,
      `WeChat has the receipt: ${JSON.stringify(atWechat.body.trade_management)}`);
    // A second confirmation is refused by WeChat, as its component answers.
    const again = await api('POST', `/sim/orders/${no}/confirm-receipt`, { token: ADMIN_TOKEN });
    assert.equal(again.status, 409, JSON.stringify(again.body));
    await screenshot(phone, 'emulator-received');
    phone.assertClean();
  });
});
