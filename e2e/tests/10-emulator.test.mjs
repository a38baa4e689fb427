// The mini-program emulator: a purchase from login to "paid", a cashier that fails (PAYERROR),
// a tampered paySign refused by WeChat, a cancelled payment, paid later.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ADMIN_TOKEN, BASE, api, eventually, launch, newPage, screenshot } from './helpers.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** A page of the emulator, logged in as a new WeChat user. */
async function loggedIn() {
  const page = await newPage(browser, { width: 1280, height: 900 });
  await page.goto(`${BASE}/emulator`);
  await page.click('#login-button');
  await page.locator('.products .product').first().waitFor();
  return page;
}

async function addToCart(page, sku, times) {
  for (let i = 0; i < times; i += 1) {
    await page.click(`.product[data-sku="${sku}"] .plus`);
  }
}

async function checkout(page) {
  await page.click('#checkout');
  await page.click('#pay-button');
  await page.locator('#cashier').waitFor({ state: 'visible' });
}

/** The order number the order page shows. */
async function shownOrder(page) {
  const el = page.locator('#order-page');
  await el.waitFor();
  return el.getAttribute('data-order');
}

async function statusOf(page, status, timeout = 30_000) {
  await page.locator(`#order-page[data-status="${status}"]`).waitFor({ timeout });
}

describe('the mini-program emulator', () => {
  test('a whole purchase goes from login to an order shown paid', async () => {
    const page = await loggedIn();
    const products = (await api('GET', '/api/products')).body.products;
    const price = Object.fromEntries(products.map((p) => [p.sku, p.price_fen]));
    await addToCart(page, 'coffee', 2);
    await addToCart(page, 'tea', 1);
    const expected = 2 * price.coffee + price.tea;
    const yuan = `¥${Math.trunc(expected / 100)}.${String(expected % 100).padStart(2, '0')}`;
    const cartTotal = await page.textContent('#cart-total');
    assert.ok(cartTotal.includes(yuan), `${cartTotal} shows ${yuan}`);
    assert.equal(await page.textContent('#cart-count'), '3');

    await checkout(page);
    assert.equal(await page.textContent('#cashier-amount'), yuan, 'the cashier shows the amount');
    const merchant = (await api('GET', '/sim/merchant', { token: ADMIN_TOKEN })).body;
    assert.match(await page.textContent('#cashier-merchant'), new RegExp(merchant.mchid), 'and the merchant');
    const payment = JSON.parse(await page.textContent('#dev-payment'));
    assert.deepEqual(Object.keys(payment).sort(), ['nonceStr', 'package', 'paySign', 'signType', 'timeStamp']);
    await screenshot(page, 'emulator-cashier');

    await page.click('#cashier-confirm');
    await statusOf(page, 'SUCCESS');
    const no = await shownOrder(page);
    assert.match(await page.textContent('#order-status-text'), /支付成功/);
    assert.ok((await page.textContent('#order-page')).includes(yuan));
    await screenshot(page, 'emulator-paid');

    // The merchant server agrees, and WeChat's notification reached it and was acknowledged.
    // The payment is applied once, by the notification or, when the order page asked first on a
    // slow machine, by the server's query of WeChat (the later notification then changes nothing).
    const token = process.env.E2E_ADMIN_TOKEN;
    const detail = await api('GET', `/admin/orders/${no}`, { token });
    assert.equal(detail.body.order.status, 'SUCCESS');
    assert.equal(detail.body.order.amount_fen, expected);
    const paid = detail.body.events.filter((e) => e.detail && e.detail.result === 'paid');
    assert.equal(paid.length, 1, JSON.stringify(detail.body.events));
    await eventually(
      async () => (await api('GET', `/sim/notifications?out_trade_no=${no}`, { token: ADMIN_TOKEN })).body.deliveries.some((d) => d.acked),
      { what: 'the acknowledgement of the notification' },
    );

    // "My orders" lists it as paid.
    await page.click('#tab-bar button[data-tab="orders"]');
    await page.locator(`#my-orders .order-card[data-order="${no}"][data-status="SUCCESS"]`).waitFor();
    page.assertClean();
  });

  test('the PAYERROR switch makes the cashier fail and the order ends as a failed payment', async () => {
    const page = await loggedIn();
    await page.check('#switch-payerror');
    await addToCart(page, 'sticker', 1);
    await checkout(page);
    await page.click('#cashier-confirm');
    await page.locator('#modal').waitFor({ state: 'visible' });
    assert.match(await page.textContent('#modal-text'), /^requestPayment:fail /);
    await page.click('#modal-ok');
    // WeChat sends no notification for a failed payment: the server learns it by querying.
    await statusOf(page, 'PAYERROR');
    const no = await shownOrder(page);
    const detail = await api('GET', `/admin/orders/${no}`, { token: process.env.E2E_ADMIN_TOKEN });
    assert.equal(detail.body.order.status, 'PAYERROR');
    page.assertClean();
  });

  test('a tampered paySign is refused by WeChat and the order can still be paid', async () => {
    const page = await loggedIn();
    await page.check('#switch-tamper');
    await addToCart(page, 'cake', 1);
    await checkout(page);
    await page.click('#cashier-confirm');
    await page.locator('#modal').waitFor({ state: 'visible' });
    assert.equal(await page.textContent('#modal-text'), 'requestPayment:fail 支付验证签名失败');
    await page.click('#modal-ok');
    await statusOf(page, 'NOTPAY');
    const no = await shownOrder(page);
    const atWeChat = await api('GET', `/sim/orders/${no}`, { token: ADMIN_TOKEN });
    assert.equal(atWeChat.body.trade_state, 'NOTPAY', 'WeChat took no money');

    // Honest again, "pay now" gets fresh parameters and pays.
    await page.uncheck('#switch-tamper');
    await page.click('#continue-pay');
    await page.locator('#cashier').waitFor({ state: 'visible' });
    await page.click('#cashier-confirm');
    await statusOf(page, 'SUCCESS');
    assert.equal(await shownOrder(page), no);
    page.assertClean();
  });

  test('shows a product name holding markup as text', async () => {
    const token = process.env.E2E_ADMIN_TOKEN;
    const name = '<img src=x onerror="window.pwned=1">';
    const product = { name, description: '<b>bold?</b>', price_fen: 1, active: true };
    assert.equal((await api('PUT', '/admin/products/markup', { token, body: product })).status, 200);
    try {
      const page = await loggedIn();
      const row = page.locator('.product[data-sku="markup"]');
      await row.waitFor();
      assert.equal(await row.locator('.product-name').textContent(), name);
      assert.equal(await row.locator('img, b').count(), 0, 'no element was made from the name');
      assert.equal(await page.evaluate(() => window.pwned), undefined);
      page.assertClean();
    } finally {
      await api('PUT', '/admin/products/markup', { token, body: { ...product, active: false } });
    }
  });

  test('cancelling the cashier leaves the order unpaid, and it can be closed', async () => {
    const page = await loggedIn();
    await addToCart(page, 'tea', 1);
    await checkout(page);
    await page.click('#cashier-cancel');
    await statusOf(page, 'NOTPAY');
    const no = await shownOrder(page);
    assert.equal((await api('GET', `/sim/orders/${no}`, { token: ADMIN_TOKEN })).body.trade_state, 'NOTPAY');
    await page.click('#close-order');
    await statusOf(page, 'CLOSED');
    assert.equal((await api('GET', `/sim/orders/${no}`, { token: ADMIN_TOKEN })).body.trade_state, 'CLOSED', 'closed at WeChat too');

    // The labels follow the language switch.
    await page.click('#lang');
    await page.locator('#nav-title', { hasText: 'Order' }).waitFor();
    assert.match(await page.textContent('#order-status-text'), /Closed/);
    page.assertClean();
  });
});
