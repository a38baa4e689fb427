// The back office: the admin token asked once, orders by status and page, a partial refund
// followed until WeChat's refund notification, the hourly chart, the simulator's switches and
// delivery log, the mini-program code.

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
} from './helpers.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

describe('the back office', () => {
  test('asks for the admin token once and keeps it for the tab', async () => {
    const page = await newPage(browser);
    await page.goto(`${BASE}/`);
    await page.locator('#login-form').waitFor();
    assert.equal(await page.textContent('#login-form h1'), '管理令牌', 'Chinese by default');
    await page.fill('#token', 'not-the-token');
    await page.click('#login-form button[type=submit]');
    await page.locator('#login-error', { hasText: '令牌不正确' }).waitFor();
    await page.fill('#token', ADMIN_TOKEN);
    await page.click('#login-form button[type=submit]');
    await page.locator('#orders-table, .view p.muted').first().waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('wxpay.console.adminToken')), ADMIN_TOKEN);
    await page.reload();
    await page.locator('#orders-table, .view p.muted').first().waitFor();
    assert.equal(await page.isVisible('#login-form'), false, 'not asked again after a reload');

    await page.click('#lang');
    await page.locator('#nav a[data-view="orders"]', { hasText: 'Orders' }).waitFor();
    await page.click('#lang');
    await page.locator('#nav a[data-view="orders"]', { hasText: '订单' }).waitFor();
    page.assertClean();
  });

  test('lists orders by status, a page at a time', async () => {
    // 21 unpaid orders, from three customers (each may only order so fast).
    const unpaid = [];
    for (let c = 0; c < 3; c += 1) {
      const who = await customer();
      for (let i = 0; i < 7; i += 1) unpaid.push((await order(who, [{ sku: 'sticker', quantity: 1 }])).out_trade_no);
    }
    const page = await newPage(browser);
    await adminLogin(page, '#/orders?status=NOTPAY');
    await page.locator('#orders-table').waitFor();
    const statuses = await page.$$eval('#orders-table tbody tr', (rows) => rows.map((r) => r.dataset.status));
    assert.equal(statuses.length, 20);
    assert.ok(statuses.every((s) => s === 'NOTPAY'), statuses.join());
    const first = await page.$$eval('#orders-table tbody tr', (rows) => rows.map((r) => r.dataset.order));
    assert.ok(first.includes(unpaid[unpaid.length - 1]), 'newest first');

    await page.click('#page-next');
    await page.waitForFunction((seen) => {
      const row = document.querySelector('#orders-table tbody tr');
      return row && !seen.includes(row.dataset.order);
    }, first);
    const second = await page.$$eval('#orders-table tbody tr', (rows) => rows.map((r) => r.dataset.order));
    assert.ok(second.length >= 1);
    assert.ok(second.every((no) => !first.includes(no)), 'the next page has other orders');
    await page.click('#page-prev');
    await page.locator(`#orders-table tbody tr[data-order="${first[0]}"]`).waitFor();

    await page.click('.filters a[data-filter="SUCCESS"]');
    await page.waitForFunction(() => [...document.querySelectorAll('#orders-table tbody tr, .view p.muted')]
      .every((r) => !r.dataset.status || r.dataset.status === 'SUCCESS'));
    page.assertClean();
  });

  test('refunds part of an order and shows it refunded once WeChat notified', async () => {
    const who = await customer();
    const created = await order(who, [{ sku: 'coffee', quantity: 2 }]);
    await pay(who, created);
    const no = created.out_trade_no;
    const total = created.amount_fen;

    const page = await newPage(browser);
    await adminLogin(page, `#/orders/${no}`);
    await page.locator('#order-summary').waitFor();
    const yuan = (fen) => `¥${Math.trunc(fen / 100)}.${String(fen % 100).padStart(2, '0')}`;
    assert.equal(await page.textContent('#refundable'), yuan(total));
    assert.ok(await page.locator('#timeline li[data-kind="notification"] .kv.ok').count() >= 1, 'the notification shows as verified');

    // More than refundable is refused in the page, before any request.
    await page.fill('#refund-amount', '999999');
    await page.click('#refund-form button[type=submit]');
    await page.locator('#refund-message', { hasText: '超过可退金额' }).waitFor();

    await page.fill('#refund-amount', '10.5');
    await page.fill('#refund-reason', '顾客退一杯的一部分');
    await page.click('#refund-form button[type=submit]');
    await page.locator('#refunds-table tbody tr').first().waitFor();
    const refund = page.locator('#refunds-table tbody tr').first();
    // The refund completes at WeChat a few seconds later; its notification settles it here.
    await page.locator('#refunds-table tbody tr[data-status="SUCCESS"]').waitFor({ timeout: 45_000 });
    assert.ok((await refund.textContent()).includes('¥10.50'));
    await page.locator('.order-detail[data-status="REFUND"]').waitFor();
    await page.locator('#refund-message', { hasText: '退款成功' }).waitFor();
    assert.equal(await page.textContent('#refundable'), yuan(total - 1050), 'the remaining refundable amount');
    // WeChat's REFUND covers a refund of any part; the label says which.
    await page.locator('#order-summary .badge[data-status="REFUND"]', { hasText: '部分退款' }).waitFor();
    await page.click('#lang');
    await page.locator('#order-summary .badge[data-status="REFUND"]', { hasText: 'Partially refunded' }).waitFor();
    await page.click('#lang');
    await page.locator('#order-summary .badge[data-status="REFUND"]', { hasText: '部分退款' }).waitFor();
    assert.ok(await page.locator('#timeline li[data-kind="refund"]').count() >= 1);
    await screenshot(page, 'backoffice-order');

    const outRefundNo = await refund.getAttribute('data-refund');
    const stored = await api('GET', `/admin/refunds/${outRefundNo}`, { token: ADMIN_TOKEN });
    assert.equal(stored.body.status, 'SUCCESS');
    assert.equal(stored.body.amount_fen, 1050);
    page.assertClean();
  });

  test('a refund submitted again after its answer was lost is made once', async () => {
    const who = await customer();
    const created = await order(who, [{ sku: 'coffee', quantity: 1 }]);
    await pay(who, created);
    const no = created.out_trade_no;
    const page = await newPage(browser);
    await adminLogin(page, `#/orders/${no}`);
    await page.locator('#refund-form').waitFor();
    // The first submit reaches the server, which makes the refund; its answer never comes back.
    const sent = [];
    await page.route('**/admin/orders/*/refunds', async (route) => {
      sent.push(route.request().postDataJSON());
      await route.fetch();
      await route.abort('connectionreset');
    });
    await page.fill('#refund-amount', '1');
    await page.click('#refund-form button[type=submit]');
    await eventually(async () => sent.length === 1 && (await page.textContent('#refund-message')) !== '', {
      what: 'the lost answer reported',
    });
    await page.unroute('**/admin/orders/*/refunds');
    // The operator submits again.
    const answered = page.waitForResponse((r) => r.url().includes('/refunds') && r.request().method() === 'POST');
    await page.click('#refund-form button[type=submit]');
    const second = await answered;
    assert.equal(second.status(), 200, 'the existing refund, not a new one');
    assert.equal((await second.json()).out_refund_no, sent[0].out_refund_no);
    const detail = await api('GET', `/admin/orders/${no}`, { token: ADMIN_TOKEN });
    assert.equal(detail.body.refunds.length, 1);
    assert.equal(detail.body.refunds[0].amount_fen, 100);
    await page.close();
  });

  test('draws the payments of the last hours', async () => {
    const page = await newPage(browser);
    await adminLogin(page, '#/stats');
    await page.locator('#hourly-chart').waitFor();
    const bars = await page.$$eval('#hourly-chart rect.bar', (rects) => rects.map((r) => ({
      payments: Number(r.dataset.payments),
      fen: Number(r.dataset.amountFen),
      height: Number(r.getAttribute('height')),
    })));
    assert.equal(bars.length, 24);
    const now = bars[bars.length - 1];
    assert.ok(now.payments >= 2 && now.fen > 0 && now.height > 0, JSON.stringify(now));
    const stats = (await api('GET', '/admin/stats/hourly', { token: ADMIN_TOKEN })).body.hours;
    assert.equal(now.fen, stats[stats.length - 1].amount_fen);
    await screenshot(page, 'backoffice-stats');
    page.assertClean();
  });

  test('switches the simulator\'s faults and shows its deliveries', async () => {
    const page = await newPage(browser);
    // The simulator's panel reads other users' orders and moves the simulated world: the
    // back office's token is asked for first, and sent with every /sim call.
    await adminLogin(page, '#/sandbox');
    await page.locator('#deliveries-table').waitFor();
    assert.ok(await page.locator('#deliveries-table tbody tr[data-kind="payment"]').count() >= 1);
    await page.fill('#fault-notify_drop_rate', '1');
    await page.click('#faults-form button[type=submit]');
    await page.locator('#faults-message', { hasText: '已保存' }).waitFor();
    assert.equal((await api('GET', '/sim/faults', { token: ADMIN_TOKEN })).body.notify_drop_rate, 1);
    await page.click('#faults-clear');
    await eventually(async () => (await api('GET', '/sim/faults', { token: ADMIN_TOKEN })).body.notify_drop_rate === 0, { what: 'faults off' });
    page.assertClean();
  });

  test('computes yuan from integer fen without floating point', async () => {
    const page = await newPage(browser);
    await page.goto(`${BASE}/#/wxacode`);
    const results = await page.evaluate(async () => {
      const m = await import('/console/common.js');
      const parse = (text) => {
        const fen = m.parseYuan(text);
        return fen === null ? null : fen.toString();
      };
      return {
        yuan: [0, 1, 10, 99, 100, 105, 1050, 123456789, 9007199254740991].map((f) => m.yuan(f)),
        negative: m.yuan(-5),
        big: m.yuan(12345678901234567890n),
        parsed: ['12', '12.5', '12.05', '0.1', ' 7.00 ', '0.29', '1.005', '1e3', '-1', '12.', '', 'abc'].map(parse),
        // 0.1 + 0.2 in floating point is 0.30000000000000004; in fen it is 30.
        total: m.totalFen([{ price_fen: 10, quantity: 1 }, { price_fen: 20, quantity: 1 }, { price_fen: 2850, quantity: 3 }]).toString(),
        fractional: (() => {
          try {
            m.yuan(1.5);
            return 'accepted';
          } catch {
            return 'refused';
          }
        })(),
      };
    });
    assert.deepEqual(results.yuan, ['0.00', '0.01', '0.10', '0.99', '1.00', '1.05', '10.50', '1234567.89', '90071992547409.91']);
    assert.equal(results.negative, '-0.05');
    assert.equal(results.big, '123456789012345678.90');
    assert.deepEqual(results.parsed, ['1200', '1250', '1205', '10', '700', '29', null, null, null, null, null, null]);
    assert.equal(results.total, '8580');
    assert.equal(results.fractional, 'refused', 'a fractional fen is an error, not rounded');
    page.assertClean();
  });

  test('shows the mini-program code of a scene, fetched with the admin token', async () => {
    const page = await newPage(browser);
    await adminLogin(page, '#/wxacode');
    await page.fill('#wxacode-scene', 'table=12');
    await page.click('#wxacode-form button[type=submit]');
    await page.locator('#wxacode-output.loaded').waitFor();
    const size = await page.$eval('#wxacode-image', (img) => [img.naturalWidth, img.naturalHeight]);
    assert.ok(size[0] > 0 && size[1] > 0, `${size}`);
    const src = await page.getAttribute('#wxacode-image', 'src');
    assert.ok(src.startsWith('blob:'), src);
    const url = await page.getAttribute('#wxacode-image', 'data-url');
    // Without a token the API refuses; with the admin token it is the JPEG the page shows.
    assert.equal((await fetch(`${BASE}${url}`)).status, 401);
    const image = await fetch(`${BASE}${url}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(image.status, 200);
    assert.equal(image.headers.get('content-type'), 'image/jpeg');
    // A page outside WXPAY_WXACODE_PAGES: the server's message, no image.
    await page.fill('#wxacode-page', 'pages/cart/cart');
    await page.click('#wxacode-form button[type=submit]');
    await page.locator('#wxacode-output .error, #wxacode-output .notice').first().waitFor();
    assert.ok((await page.textContent('#wxacode-output')).includes('WXPAY_WXACODE_PAGES'));
    page.assertClean();
  });
});
