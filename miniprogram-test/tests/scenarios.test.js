// The mini program against real `wxpay serve` processes (scripts/test-miniprogram starts them):
// each scenario drives the pages as a user does and asserts what they show.
'use strict';

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const { Phone, Relay, call, until, problems } = require('../harness');

const V3 = process.env.MP_V3_URL;
const V2 = process.env.MP_V2_URL;
const SHORT = process.env.MP_SHORT_SESSION_URL;
const ADMIN = process.env.MP_ADMIN_TOKEN;
if (!V3 || !V2 || !SHORT || !ADMIN) {
  throw new Error('MP_V3_URL, MP_V2_URL, MP_SHORT_SESSION_URL and MP_ADMIN_TOKEN are set by scripts/test-miniprogram');
}

const launches = [];
async function launch(phone, baseUrl, sandbox = false) {
  const app = await phone.launch({ baseUrl, sandbox });
  launches.push(app);
  return app;
}
function phoneOf(server) {
  return new Phone({ wechat: server, adminToken: ADMIN });
}
after(() => {
  for (const app of launches) app.close();
});

/** Nothing went wrong that a page did not show: no unhandled rejection, no console error. */
function assertNoProblems() {
  assert.deepEqual(problems.splice(0), []);
}

async function catalogue(app) {
  return app.onPage('pages/catalog/catalog', (c) => !c.data.loading && !c.data.error && c.data.products.length > 0, 'with products');
}

/** From the catalogue: `picks` ({sku: taps}) then "去结算", to the confirmation page ready to pay. */
async function toConfirmation(app, picks) {
  await catalogue(app);
  for (const [sku, taps] of Object.entries(picks)) {
    for (let i = 0; i < taps; i++) {
      const before = app.page.comp.data.count;
      app.tap(`#more-${sku}`);
      await until(() => app.page.comp.data.count === before + 1, `${sku} in the cart`);
    }
  }
  app.tap('#checkout');
  return app.onPage('pages/confirm/confirm', (c) => !c.data.loading, 'loaded');
}

async function result(app) {
  return app.onPage('pages/result/result', (c) => c.data.amount !== '' || c.data.error !== '', 'with the order');
}

async function admin(server, method, path, body) {
  const res = await call(method, `${server}${path}`, { body, token: ADMIN });
  assert.ok(res.status >= 200 && res.status < 300, `${method} ${path}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

test('logging out revokes the session at the server and forgets the token; the next request logs in again', async () => {
  const phone = phoneOf(V3);
  const app = await launch(phone, V3);
  await catalogue(app);
  const client = app.module('utils/shop');
  await client.orders();
  const token = JSON.parse(phone.storage.get('wxpay.session')).token;
  assert.equal((await call('GET', `${V3}/api/orders`, { token })).status, 200);
  const logins = app.logins;

  await client.logout();
  assert.equal(phone.storage.get('wxpay.session'), undefined, 'the token is forgotten');
  assert.deepEqual(app.sent('POST', '/api/logout').map((r) => r.status), [204]);
  const refused = await call('GET', `${V3}/api/orders`, { token });
  assert.equal(refused.status, 401, 'the server refuses the old token');

  await client.orders();
  assert.equal(app.logins, logins + 1, 'a new session');
  assert.notEqual(JSON.parse(phone.storage.get('wxpay.session')).token, token);
  assertNoProblems();
});

// The expired session: a user logs in and buys on a server whose sessions last 60 s (its
// shortest); the last test opens the mini program again once that session has expired.
const expiring = { phone: null, no: '', expiresAt: 0 };

test('a first visit on the short-session server: log in, buy, leave', async () => {
  const phone = phoneOf(SHORT);
  const app = await launch(phone, SHORT);
  await toConfirmation(app, { sticker: 1 });
  app.tap('#pay');
  await result(app);
  assert.equal(app.page.comp.data.status, 'paid', app.text());
  const login = app.sent('POST', '/api/login');
  assert.equal(login.length, 1);
  expiring.phone = phone;
  expiring.no = app.page.comp.data.no;
  expiring.expiresAt = Date.now() + login[0].response.expires_in * 1000;
  assert.ok(phone.storage.has('wxpay.session'), 'the session is kept in storage');
  app.close();
  assertNoProblems();
});

test('a whole purchase on a v3 server: catalogue, cart, confirmation, WeChat pay, paid; then a partial refund', async () => {
  const app = await launch(phoneOf(V3), V3);
  await catalogue(app);
  const shown = app.text();
  assert.ok(shown.includes('拿铁咖啡 Latte') && shown.includes('¥18.00'), shown);
  assert.ok(shown.includes('贴纸 Sticker') && shown.includes('¥0.01'), shown);

  const confirm = await toConfirmation(app, { coffee: 2, tea: 1 });
  assert.equal(app.text('#total'), '¥48.00');
  assert.ok(app.text('#lines').includes('拿铁咖啡 Latte × 2'), app.text('#lines'));
  assert.ok(app.text('#pay').includes('微信支付 ¥48.00'));
  assert.equal(confirm.data.lines.length, 2);

  app.tap('#pay');
  const page = await result(app);
  assert.equal(page.data.status, 'paid');
  assert.equal(app.text('#title'), '支付成功');
  assert.equal(app.text('#amount'), '¥48.00');

  // wx.requestPayment got the server's object, untouched, and WeChat accepted its paySign.
  const placed = app.sent('POST', '/api/orders');
  assert.equal(placed.length, 1);
  assert.equal(placed[0].status, 201);
  assert.deepEqual(placed[0].body, { items: [{ sku: 'coffee', quantity: 2 }, { sku: 'tea', quantity: 1 }] });
  assert.equal(app.payments.length, 1);
  assert.deepEqual(app.payments[0].payment, placed[0].response.payment);
  assert.equal(app.payments[0].payment.signType, 'RSA');
  assert.equal(app.payments[0].errMsg, 'requestPayment:ok');
  const no = placed[0].response.out_trade_no;
  assert.equal(page.data.no, no);
  assert.deepEqual(JSON.parse(app.phone.storage.get('shop.cart')), {}, 'the cart is emptied once the order exists');

  app.tap('#view-order');
  await app.onPage('pages/order/order', (c) => c.data.order !== null);
  assert.equal(app.text('#status'), '已支付');
  assert.equal(app.text('#amount'), '¥48.00');
  const fields = app.text('#fields');
  assert.ok(fields.includes(no) && fields.includes('微信支付单号') && /4200\d+/.test(fields), fields);
  assert.ok(app.text('#items').includes('茉莉花茶 Jasmine tea × 1 ¥12.00'), app.text('#items'));
  assert.equal(app.has('#pay'), false, 'a paid order has no "去支付"');

  // The merchant refunds ¥10.00; the user's pages show it.
  await admin(V3, 'POST', `/admin/orders/${no}/refunds`, { amount_fen: 1000, reason: '少一杯' });
  await until(async () => (await admin(V3, 'GET', `/admin/orders/${no}`)).order.refunded_fen === 1000, 'the refund to succeed');
  await app.open('pages/orders/orders', {}, 'switchTab');
  await app.onPage('pages/orders/orders', (c) => c.data.orders.length === 1 && c.data.orders[0].statusText === '部分退款');
  assert.ok(app.text(`#order-${no}`).includes('部分退款'), app.text());
  assert.ok(app.text(`#order-${no}`).includes('¥48.00'));
  app.tap(`#order-${no}`);
  await app.onPage('pages/order/order', (c) => c.data.order !== null);
  assert.equal(app.text('#refunded'), '已退款 ¥10.00');
  assert.ok(app.text('#refunds').includes('实付 ¥38.00'), app.text('#refunds'));
  assertNoProblems();
});

test('a whole purchase on a v2 server', async () => {
  const app = await launch(phoneOf(V2), V2);
  await toConfirmation(app, { sticker: 3 });
  assert.equal(app.text('#total'), '¥0.03');
  app.tap('#pay');
  await result(app);
  assert.equal(app.page.comp.data.status, 'paid', app.text());
  assert.equal(app.text('#title'), '支付成功');
  const placed = app.sent('POST', '/api/orders')[0];
  assert.deepEqual(app.payments[0].payment, placed.response.payment);
  assert.ok(['MD5', 'HMAC-SHA256'].includes(placed.response.payment.signType), placed.response.payment.signType);
  app.tap('#view-order');
  await app.onPage('pages/order/order', (c) => c.data.order !== null);
  assert.equal(app.text('#status'), '已支付');
  assert.equal(app.text('#amount'), '¥0.03');
  assertNoProblems();
});

test('cancelled in the cashier, then paid again from my orders', async () => {
  const app = await launch(phoneOf(V3), V3);
  await toConfirmation(app, { tea: 1 });
  app.cashier.push('cancel');
  app.tap('#pay');
  await result(app);
  assert.equal(app.page.comp.data.status, 'cancelled');
  assert.equal(app.text('#title'), '已取消支付');
  assert.ok(app.has('#pay-again'), 'the result page offers "继续支付"');
  const no = app.page.comp.data.no;
  assert.equal(app.payments[0].errMsg, 'requestPayment:fail cancel');
  assert.equal((await admin(V3, 'GET', `/admin/orders/${no}`)).order.status, 'NOTPAY');

  await app.open('pages/orders/orders', {}, 'switchTab');
  await app.onPage('pages/orders/orders', (c) => c.data.orders.length === 1);
  assert.ok(app.text(`#order-${no}`).includes('待支付'), app.text());
  assert.ok(app.text(`#order-${no}`).includes('去支付'));
  app.tap(`#pay-${no}`);
  await result(app);
  assert.equal(app.page.comp.data.status, 'paid', app.text());
  assert.equal(app.text('#title'), '支付成功');
  assert.equal(app.text('#amount'), '¥12.00');
  // One order, paid with fresh parameters from the server.
  assert.equal(app.sent('POST', '/api/orders').length, 1);
  const repaid = app.sent('POST', `/api/orders/${no}/payment`);
  assert.equal(repaid.length, 1);
  assert.deepEqual(app.payments[1].payment, repaid[0].response.payment);

  // Back on my orders, it is paid.
  await app.open('pages/orders/orders', {}, 'switchTab');
  await app.onPage('pages/orders/orders', (c) => c.data.orders.length === 1 && c.data.orders[0].status === 'SUCCESS');
  assert.ok(app.text(`#order-${no}`).includes('已支付'), app.text());
  assert.equal(app.has(`#pay-${no}`), false);
  assertNoProblems();
});

test('an unpaid order cancelled from its page is closed, at WeChat too', async () => {
  const app = await launch(phoneOf(V3), V3);
  await toConfirmation(app, { sticker: 1 });
  app.cashier.push('cancel');
  app.tap('#pay');
  await result(app);
  const no = app.page.comp.data.no;
  app.tap('#view-order');
  await app.onPage('pages/order/order', (c) => c.data.order !== null);
  assert.equal(app.text('#status'), '待支付');
  assert.ok(app.has('#pay') && app.has('#close'));
  app.tap('#close');
  await app.onPage('pages/order/order', (c) => c.data.order.status === 'CLOSED');
  assert.deepEqual(app.modals.map((m) => m.title), ['取消订单'], 'asked first');
  assert.equal(app.text('#status'), '已关闭');
  assert.equal(app.has('#pay'), false);
  assert.ok(app.has('#again'));
  const atWechat = await call('GET', `${V3}/sim/orders/${no}`, { token: ADMIN });
  assert.equal(atWechat.body.trade_state, 'CLOSED');
  assertNoProblems();
});

test('the cashier fails (PAYERROR): WeChat\'s message, then the order shows failed and can be ordered again', async () => {
  const app = await launch(phoneOf(V3), V3);
  await toConfirmation(app, { cake: 1 });
  app.cashier.push('payerror');
  app.tap('#pay');
  await result(app);
  assert.equal(app.page.comp.data.status, 'failed', app.text());
  assert.equal(app.text('#title'), '支付失败');
  assert.equal(app.text('#desc'), '支付失败，请稍后再试', 'WeChat\'s own words');
  assert.ok(app.payments[0].errMsg.startsWith('requestPayment:fail'));
  const no = app.page.comp.data.no;

  // The order page asks the server, which asks WeChat: PAYERROR.
  app.tap('#view-order');
  await app.onPage('pages/order/order', (c) => c.data.order !== null);
  await until(async () => {
    await app.page.comp.instance.reload();
    return app.page.comp.data.order && app.page.comp.data.order.status === 'PAYERROR';
  }, 'the server to learn the failure from WeChat');
  assert.equal(app.text('#status'), '支付失败');
  assert.equal(app.has('#pay'), false, 'a failed order cannot be paid again');
  app.tap('#again');
  await app.onPage('pages/cart/cart', (c) => !c.data.loading && c.data.lines.length === 1);
  assert.ok(app.text('#lines').includes('芝士蛋糕 Cheesecake'), app.text());
  assert.ok(app.text('#cart-total').includes('¥28.50'));
  assert.equal((await admin(V3, 'GET', `/admin/orders/${no}`)).order.status, 'PAYERROR');
  assertNoProblems();
});

test('the server unreachable: a clear message, no crash; it works once the server is back', async () => {
  const relay = await new Relay(V3).start();
  const app = await launch(phoneOf(V3), relay.url);
  try {
    await app.onPage('pages/catalog/catalog', (c) => !c.data.loading);
    assert.equal(app.text('#error'), '网络连接失败，请检查网络后重试 重新加载');
    assert.ok(app.requests.every((r) => r.status === 0), 'nothing reached the server');

    await relay.up();
    app.tap('#retry');
    await toConfirmation(app, { tea: 2 });
    assert.equal(app.text('#total'), '¥24.00');

    // Down again just as the user pays: no order, the cart kept, a message, the button back.
    await relay.down();
    app.tap('#pay');
    await app.onPage('pages/confirm/confirm', (c) => !c.data.paying && c.data.error !== '');
    assert.equal(app.text('#error'), '网络连接失败，请检查网络后重试');
    assert.ok(app.text('#pay').includes('微信支付 ¥24.00'));
    assert.deepEqual(JSON.parse(app.phone.storage.get('shop.cart')), { tea: 2 });
    assert.equal(app.payments.length, 0);

    await relay.up();
    app.tap('#pay');
    await result(app);
    assert.equal(app.page.comp.data.status, 'paid', app.text());
    const created = app.sent('POST', '/api/orders').filter((r) => r.status === 201);
    assert.equal(created.length, 1, 'one order');
  } finally {
    await relay.down();
  }
  assertNoProblems();
});

test('the paid notification lost: the order still ends paid, the server having asked WeChat', async () => {
  await admin(V3, 'PUT', '/sim/faults', { notify_drop_rate: 1 });
  let no;
  try {
    const app = await launch(phoneOf(V3), V3);
    await toConfirmation(app, { coffee: 1 });
    app.tap('#pay');
    await result(app);
    assert.equal(app.page.comp.data.status, 'paid', app.text());
    assert.equal(app.text('#title'), '支付成功');
    no = app.page.comp.data.no;
  } finally {
    await admin(V3, 'PUT', '/sim/faults', {});
  }
  const deliveries = (await admin(V3, 'GET', `/sim/notifications?out_trade_no=${no}`)).deliveries;
  assert.equal(deliveries.length, 1);
  assert.ok(deliveries[0].attempts.length >= 1);
  assert.ok(deliveries[0].attempts.every((a) => a.outcome === 'dropped'), JSON.stringify(deliveries[0].attempts));
  const timeline = (await admin(V3, 'GET', `/admin/orders/${no}`)).events;
  assert.ok(timeline.some((e) => e.kind === 'query' && e.detail.result === 'paid'), JSON.stringify(timeline));
  assert.ok(!timeline.some((e) => e.kind === 'notification'), 'no notification came');
  assertNoProblems();
});

test('an order\'s page lists its refunds: amounts in yuan, reasons and states (已退款, 退款中)', async () => {
  const app = await launch(phoneOf(V3), V3);
  await toConfirmation(app, { coffee: 1 });
  app.tap('#pay');
  const page = await result(app);
  assert.equal(page.data.status, 'paid', app.text());
  const no = page.data.no;

  // The merchant refunds ¥5.00 through the back office; WeChat settles it.
  const first = await admin(V3, 'POST', `/admin/orders/${no}/refunds`, { amount_fen: 500, reason: '少放糖' });
  await until(async () => (await admin(V3, 'GET', `/admin/refunds/${first.out_refund_no}`)).status === 'SUCCESS', 'the first refund to succeed');
  // Then ¥2.50 while WeChat does not answer: the server keeps it PROCESSING.
  await admin(V3, 'PUT', '/sim/faults', { api_error_rate: 1 });
  let second;
  try {
    second = await admin(V3, 'POST', `/admin/orders/${no}/refunds`, { amount_fen: 250 });
    assert.equal(second.status, 'PROCESSING');

    app.tap('#view-order');
    await app.onPage('pages/order/order', (c) => c.data.order !== null && c.data.order.refunds.length === 2, 'with its two refunds');
    assert.equal(app.text('#status'), '部分退款');
    assert.equal(app.text('#refunded'), '已退款 ¥7.50');
    const list = app.text('#refund-list');
    const [settled, pending] = app.page.comp.data.order.refunds;
    assert.deepEqual([settled.no, settled.amount, settled.statusText], [first.out_refund_no, '¥5.00', '已退款']);
    assert.deepEqual([pending.no, pending.amount, pending.statusText], [second.out_refund_no, '¥2.50', '退款中']);
    assert.ok(list.includes('退款 ¥5.00 已退款 原因：少放糖'), list);
    assert.ok(list.includes('到账时间'), list);
    assert.ok(list.includes('退款 ¥2.50 退款中'), list);
    assert.ok(list.includes(first.out_refund_no) && list.includes(second.out_refund_no), list);
    assert.equal((list.match(/到账时间/g) || []).length, 1, 'only the settled refund has a time of arrival');
    // The server sent the buyer's fields only.
    const answer = app.sent('GET', `/api/orders/${no}`).at(-1).response;
    assert.deepEqual(Object.keys(answer.refunds[1]).sort(), ['amount_fen', 'created_at', 'out_refund_no', 'reason', 'status', 'succeeded_at']);
  } finally {
    await admin(V3, 'PUT', '/sim/faults', {});
  }
  assertNoProblems();
});

test('a shipped order: the page shows its delivery and shipping, "确认收货" opens WeChat\'s component, which confirms receipt at WeChat', async () => {
  const app = await launch(phoneOf(V3), V3);
  await toConfirmation(app, { tea: 1 });
  app.tap('#pay');
  const page = await result(app);
  assert.equal(page.data.status, 'paid', app.text());
  const no = page.data.no;

  // Paid, not shipped yet: how it is delivered and that it waits for the merchant; no button.
  app.tap('#view-order');
  await app.onPage('pages/order/order', (c) => c.data.order !== null);
  assert.equal(app.text('#delivery'), '快递配送');
  assert.equal(app.text('#shipping'), '待发货');
  assert.equal(app.has('#confirm-receipt'), false, 'nothing to confirm before the shipment');
  const paidView = app.sent('GET', `/api/orders/${no}`).at(-1).response;
  assert.equal(paidView.delivery, 'express');
  assert.equal(paidView.shipping_state, 'awaiting_shipment');
  const tx = paidView.transaction_id;
  assert.ok(/^4200\d+$/.test(tx), tx);

  // The merchant ships it, in one parcel; the page, loaded again, shows it shipped and the button.
  await admin(V3, 'POST', `/admin/orders/${no}/shipments`, { express_company: 'YTO', tracking_no: 'YT1234567890', last: true });
  await app.page.comp.instance.reload();
  await app.onPage('pages/order/order', (c) => c.data.order.shippingState === 'shipped', 'shipped');
  assert.equal(app.text('#shipping'), '已发货');
  assert.equal(app.text('#confirm-receipt'), '确认收货');
  await app.open('pages/orders/orders', {}, 'switchTab');
  await app.onPage('pages/orders/orders', (c) => c.data.orders.length === 1 && c.data.orders[0].shippingText === '已发货');
  assert.ok(app.text(`#order-${no}`).includes('已支付') && app.text(`#shipping-${no}`).includes('已发货'), app.text());
  app.tap(`#order-${no}`);
  await app.onPage('pages/order/order', (c) => c.data.order !== null && c.data.order.canConfirmReceipt);
  /** Whether the order page asked the server for the order again (after `before` requests) and got it. */
  const askedAgain = (before) => {
    const seen = app.sent('GET', `/api/orders/${no}`);
    return seen.length > before && seen.at(-1).status === 200;
  };
  const atWechat = async () => (await admin(V3, 'GET', `/sim/orders/${no}`)).trade_management;
  assert.equal((await atWechat()).order_state, 2, 'WeChat: shipped, awaiting receipt');

  // The buyer closes the component without confirming: nothing changes, the button stays.
  app.receiptChoices.push('cancel');
  let asked = app.sent('GET', `/api/orders/${no}`).length;
  app.tap('#confirm-receipt');
  await until(() => askedAgain(asked), 'the order asked again after the component');
  await app.onPage('pages/order/order', (c) => !c.data.busy && !c.data.loading);
  assert.deepEqual(app.receipts.map((r) => [r.extraData, r.status]), [[{ transaction_id: tx }, 'cancel']]);
  assert.ok(app.has('#confirm-receipt'), 'still to confirm');
  assert.equal((await atWechat()).order_state, 2);

  // Then confirms: WeChat's component is opened with the order's transaction_id, WeChat records
  // the buyer's confirmation, the answer comes through App.onShow and the page asks the server again.
  asked = app.sent('GET', `/api/orders/${no}`).length;
  app.tap('#confirm-receipt');
  await until(() => app.receipts.length === 2 && app.receipts[1].status !== '', 'the component\'s answer');
  assertNoProblems(); // the simulator was reached (the /sim proxy passes confirm-receipt)
  const confirmed = app.receipts[1];
  assert.deepEqual(confirmed.extraData, { transaction_id: tx }, 'opened with the order\'s transaction_id');
  assert.equal(confirmed.status, 'success', JSON.stringify(confirmed.sim));
  await until(() => askedAgain(asked), 'the order refreshed after the component');
  await app.onPage('pages/order/order', (c) => c.data.receiptConfirmed && !c.data.loading, 'confirmed');
  assert.ok(app.toasts.includes('已确认收货'), JSON.stringify(app.toasts));
  assert.equal(app.has('#confirm-receipt'), false, 'confirmed once');
  assert.equal(app.has('#action-error'), false, app.text());
  // The server learns it from WeChat's message push (not set up on these sandboxes): until then
  // it still says shipped, and the page says what the buyer did.
  const refreshed = app.sent('GET', `/api/orders/${no}`).at(-1).response;
  assert.ok(['shipped', 'received', 'settled'].includes(refreshed.shipping_state), refreshed.shipping_state);
  const expected = { shipped: '已确认收货', received: '已收货', settled: '已完成' }[refreshed.shipping_state];
  assert.ok(app.text('#shipping').startsWith(expected), app.text('#shipping'));
  const trade = await atWechat();
  assert.equal(trade.order_state, 4, `WeChat: receipt confirmed and settled: ${JSON.stringify(trade)}`);
  assert.equal(trade.confirm_method, 2, 'confirmed by the buyer');
  assert.ok(trade.confirmed_at, JSON.stringify(trade));
  assertNoProblems();
});

test('two quick taps on "pay" make one order', async () => {
  const app = await launch(phoneOf(V3), V3);
  await toConfirmation(app, { tea: 1, sticker: 1 });
  app.tap('#pay');
  app.tap('#pay');
  await result(app);
  assert.equal(app.page.comp.data.status, 'paid', app.text());
  assert.equal(app.sent('POST', '/api/orders').length, 1);
  assert.equal(app.payments.length, 1);
  await app.open('pages/orders/orders', {}, 'switchTab');
  await app.onPage('pages/orders/orders', (c) => !c.data.loading);
  assert.equal(app.page.comp.data.orders.length, 1);
  assert.ok(app.text('#orders').includes('¥12.01'), app.text());
  assertNoProblems();
});

/** A 1000 (现金营销) transfer of `amountFen` to `openid`, as the back office makes it. */
function cashBack(openid, amountFen, remark = '首单返现') {
  return {
    openid,
    amount_fen: amountFen,
    scene: '1000',
    report_infos: [
      { info_type: '活动名称', info_content: '新会员有礼' },
      { info_type: '奖励说明', info_content: remark },
    ],
    perception: '现金奖励',
    remark,
    reason: 'mini program scenario: cash back',
  };
}

/** Launches on the v3 server and waits until the user logged in (the server knows them then). */
async function loggedIn(phone, sandbox = false) {
  const app = await launch(phone, V3, sandbox);
  await catalogue(app);
  await until(() => {
    const logins = app.sent('POST', '/api/login');
    const refused = logins.find((r) => r.status !== 0 && r.status !== 200);
    if (refused) throw new Error(`the login was refused: ${refused.status} ${JSON.stringify(refused.response)}`);
    return logins.some((r) => r.status === 200);
  }, 'the login');
  return app;
}

/** From my orders, "待收款", until the transfers are listed. */
async function toTransfers(app, check = (c) => c.data.transfers.length > 0) {
  await app.open('pages/orders/orders', {}, 'switchTab');
  await app.onPage('pages/orders/orders', (c) => !c.data.loading);
  app.tap('#transfers-link');
  return app.onPage('pages/transfers/transfers', (c) => !c.data.loading && check(c), 'listed');
}

test('money for you: a transfer made in the back office is received in WeChat\'s 确认收款 page, then shows 已到账', async () => {
  const phone = phoneOf(V3);
  const app = await loggedIn(phone);
  const made = await admin(V3, 'POST', '/admin/transfers', cashBack(phone.openid, 1234));
  assert.equal(made.status, 'WAIT_USER_CONFIRM', JSON.stringify(made));
  const no = made.out_bill_no;

  await toTransfers(app);
  assert.equal(app.text(`#status-${no}`), '待收款');
  assert.equal(app.text(`#amount-${no}`), '¥12.34');
  assert.ok(app.text(`#transfer-${no}`).includes('首单返现'), app.text());
  assert.equal(app.text(`#receive-${no}`), '收款');

  app.tap(`#receive-${no}`);
  await app.onPage('pages/transfers/transfers', (c) => !c.data.busy && c.data.transfers.some((x) => x.no === no && x.status === 'SUCCESS'), 'received');
  assert.equal(app.text(`#status-${no}`), '已到账');
  assert.equal(app.has(`#receive-${no}`), false, 'nothing more to receive');
  assert.equal(app.has('#action-error'), false, app.text());
  assert.ok(app.toasts.includes('已到账'), JSON.stringify(app.toasts));

  // wx.requestMerchantTransfer got the server's object, untouched, and WeChat took it from this user.
  const asked = app.sent('POST', `/api/transfers/${no}/confirm`);
  assert.deepEqual(asked.map((r) => r.status), [200]);
  assert.equal(app.merchantTransfers.length, 1);
  const given = app.merchantTransfers[0];
  assert.deepEqual(given.object, asked[0].response);
  assert.deepEqual(Object.keys(given.object).sort(), ['appId', 'mchId', 'openId', 'package']);
  assert.equal(given.object.openId, phone.openid);
  assert.equal(given.errMsg, 'requestMerchantTransfer:ok', JSON.stringify(given.sim));
  // "ok" is not the money: the page asked the server until the transfer was final, at most ten times.
  const looks = app.sent('GET', '/api/transfers').length;
  assert.ok(looks >= 3 && looks <= 13, `${looks} looks at the transfers`);
  const atServer = await admin(V3, 'GET', `/admin/transfers/${no}`);
  assert.equal(atServer.status, 'SUCCESS');
  assert.ok(atServer.timeline.some((e) => e.kind === 'state' && e.detail.state === 'SUCCESS'), JSON.stringify(atServer.timeline));
  assertNoProblems();
});

test('money for you: the user cancels WeChat\'s 确认收款 page (still waiting), then the merchant withdraws it', async () => {
  const phone = phoneOf(V3);
  const app = await loggedIn(phone);
  const no = (await admin(V3, 'POST', '/admin/transfers', cashBack(phone.openid, 880, '邀请奖励'))).out_bill_no;
  await toTransfers(app);
  assert.equal(app.text(`#amount-${no}`), '¥8.80');

  app.transferChoices.push('cancel');
  app.tap(`#receive-${no}`);
  await until(() => app.merchantTransfers.length === 1 && app.merchantTransfers[0].errMsg !== '', 'WeChat\'s page answered');
  await app.onPage('pages/transfers/transfers', (c) => !c.data.busy && !c.data.loading, 'after the page');
  assert.equal(app.merchantTransfers[0].errMsg, 'requestMerchantTransfer:fail cancel', JSON.stringify(app.merchantTransfers[0].sim));
  assert.ok(app.toasts.includes('已取消收款'), JSON.stringify(app.toasts));
  assert.equal(app.has('#action-error'), false, app.text());
  await until(() => app.page.comp.data.transfers.some((x) => x.no === no && x.canConfirm), 'still to receive');
  assert.equal(app.text(`#status-${no}`), '待收款');
  assert.ok(app.has(`#receive-${no}`), 'still to receive');
  assert.equal((await admin(V3, 'GET', `/admin/transfers/${no}`)).status, 'WAIT_USER_CONFIRM');

  // The merchant cancels it while the page still offers it: the tap is refused by the server
  // (WeChat is never asked), the page says so and shows it withdrawn.
  const cancelled = await admin(V3, 'POST', `/admin/transfers/${no}/cancel`, {});
  assert.ok(['CANCELING', 'CANCELLED'].includes(cancelled.status), JSON.stringify(cancelled));
  await until(async () => (await admin(V3, 'GET', `/admin/transfers/${no}`)).status === 'CANCELLED', 'cancelled at the server');
  app.tap(`#receive-${no}`);
  await app.onPage('pages/transfers/transfers', (c) => !c.data.busy && c.data.error !== '' && c.data.transfers.some((x) => x.no === no && x.status === 'CANCELLED'), 'refused');
  assert.equal(app.text('#action-error'), '这笔转账已不能收款，请刷新后查看');
  assert.deepEqual(app.sent('POST', `/api/transfers/${no}/confirm`).map((r) => r.status), [200, 409]);
  assert.equal(app.merchantTransfers.length, 1, 'WeChat\'s page is not opened for it');
  assert.equal(app.text(`#status-${no}`), '已撤销');
  assert.equal(app.has(`#receive-${no}`), false);
  assertNoProblems();
});

test('DevTools against a sandbox: WeChat\'s 确认收款 page is a modal whose 收款 confirms at the simulator', async () => {
  const phone = phoneOf(V3);
  const app = await loggedIn(phone, true);
  const openid = JSON.parse(phone.storage.get('wxpay.sandbox.openid'));
  const no = (await admin(V3, 'POST', '/admin/transfers', cashBack(openid, 50, '签到奖励'))).out_bill_no;
  await toTransfers(app);
  app.tap(`#receive-${no}`);
  await app.onPage('pages/transfers/transfers', (c) => !c.data.busy && c.data.transfers.some((x) => x.no === no && x.status === 'SUCCESS'), 'received');
  assert.equal(app.merchantTransfers.length, 0, 'wx.requestMerchantTransfer is not used');
  assert.deepEqual(app.modals.map((m) => m.title), ['模拟确认收款']);
  assert.deepEqual(app.sent('POST', '/sim/transfers/confirm').map((r) => r.response.errMsg), ['requestMerchantTransfer:ok']);
  assert.equal(app.sent('POST', '/sim/transfers/confirm')[0].body.openid, openid);
  assert.equal(app.text(`#status-${no}`), '已到账');
  assertNoProblems();
});

test('DevTools against a sandbox (config sandbox: true): login codes and the cashier come from the simulator', async () => {
  const phone = phoneOf(V3);
  const app = await launch(phone, V3, true);
  await toConfirmation(app, { coffee: 1 });
  app.tap('#pay');
  await result(app);
  assert.equal(app.page.comp.data.status, 'paid', app.text());
  assert.equal(app.text('#amount'), '¥18.00');
  assert.equal(app.logins, 0, 'wx.login is not used');
  assert.equal(app.payments.length, 0, 'wx.requestPayment is not used');
  assert.deepEqual(app.modals.map((m) => m.title), ['模拟微信支付']);
  assert.deepEqual(app.sent('POST', '/sim/users').map((r) => r.status), [200]);
  assert.deepEqual(app.sent('POST', '/sim/pay').map((r) => r.response.errMsg), ['requestPayment:ok']);
  assertNoProblems();
});

test('DevTools against a sandbox: a known user logs in again with their key, and nobody else can as them', async () => {
  const phone = phoneOf(V3);
  const first = await launch(phone, V3, true);
  await catalogue(first);
  // The catalogue needs no login: the sandbox's login may still be under way.
  await until(() => phone.storage.has('wxpay.sandbox.openid'), 'the sandbox login');
  const openid = JSON.parse(phone.storage.get('wxpay.sandbox.openid'));
  assert.ok(JSON.parse(phone.storage.get('wxpay.sandbox.user_key')), 'the user key is kept beside the openid');
  first.close();
  // The session is gone (logged out, or expired): the same WeChat user logs in again.
  phone.storage.delete('wxpay.session');
  const again = await launch(phone, V3, true);
  await catalogue(again);
  const relogin = again.sent('POST', `/sim/users/${openid}/code`);
  assert.deepEqual(relogin.map((r) => r.status), [200]);
  assert.equal(relogin[0].response.openid, openid);
  assert.equal(again.sent('POST', '/sim/users').length, 0, 'no new user');
  again.close();

  // Another phone that knows the openid but not the key gets no code for it.
  const res = await call('POST', `${V3}/sim/users/${encodeURIComponent(openid)}/code`, {});
  assert.equal(res.status, 401, JSON.stringify(res.body));
  const wrong = await call('POST', `${V3}/sim/users/${encodeURIComponent(openid)}/code`, { userKey: 'not-the-key' });
  assert.equal(wrong.status, 403, JSON.stringify(wrong.body));
  const thief = phoneOf(V3);
  thief.storage.set('wxpay.sandbox.openid', JSON.stringify(openid));
  const stolen = await launch(thief, V3, true);
  await catalogue(stolen);
  assert.notEqual(JSON.parse(thief.storage.get('wxpay.sandbox.openid')), openid, 'a user of their own');
  assertNoProblems();
});

test('an expired session is renewed silently, with one login for concurrent requests', async () => {
  assert.ok(expiring.phone, 'the first visit ran');
  // The session of the first visit ends at expiresAt: wait for that moment to pass.
  const wait = expiring.expiresAt + 1000 - Date.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  const phone = expiring.phone;
  const oldToken = JSON.parse(phone.storage.get('wxpay.session')).token;
  const app = await launch(phone, SHORT);
  await catalogue(app);
  assert.equal(app.logins, 0, 'a stored session is used as it is');

  // My orders and the order's detail at once: both are refused, one login serves both.
  const client = app.module('utils/shop');
  const detail = client.order(expiring.no);
  await app.open('pages/orders/orders', {}, 'switchTab');
  await app.onPage('pages/orders/orders', (c) => !c.data.loading);
  assert.equal((await detail).status, 'SUCCESS');
  assert.equal(app.has('#error'), false, app.text());
  assert.ok(app.text(`#order-${expiring.no}`).includes('已支付'), app.text());
  assert.equal(app.logins, 1);
  assert.equal(app.sent('POST', '/api/login').length, 1);
  const refused = app.requests.filter((r) => r.status === 401);
  assert.equal(refused.length, 2, 'both requests met the expired session');
  assert.ok(refused.every((r) => r.token === `Bearer ${oldToken}`));
  const newToken = JSON.parse(phone.storage.get('wxpay.session')).token;
  assert.notEqual(newToken, oldToken);
  assert.deepEqual(app.sent('GET', '/api/orders').map((r) => r.status), [401, 200], 'asked, refused, asked again');
  assertNoProblems();
});
