// The daily reconciliation page. Runs last: it moves the simulator's clock a day ahead.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  adminLogin,
  customer,
  launch,
  newPage,
  order,
  pay,
  screenshot,
  sqlite,
  todayCst,
} from './helpers.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

describe('the reconciliation page', () => {
  test('compares today\'s bill with the database once WeChat made it, mismatches highlighted', async () => {
    const who = await customer();
    const honest = await order(who, [{ sku: 'tea', quantity: 2 }]);
    await pay(who, honest);
    const tampered = await order(who, [{ sku: 'cake', quantity: 1 }]);
    await pay(who, tampered);
    // A deliberate mismatch: the amount recorded here is not what WeChat took.
    sqlite('UPDATE orders SET amount_fen = amount_fen + 1 WHERE out_trade_no = ?', tampered.out_trade_no);

    const today = todayCst();
    const page = await newPage(browser);
    await adminLogin(page, `#/reconciliation/${today}`);
    await page.locator('#bill-not-ready').waitFor();

    // A day later at WeChat, through the sandbox page (POST /sim/clock/advance via the proxy).
    await page.goto(`${page.url().split('#')[0]}#/sandbox`);
    await page.locator('#sim-offset').waitFor();
    await page.click('#clock-day');
    await page.locator('#sim-offset', { hasText: '86400' }).waitFor();
    // WeChat makes yesterday's bill at 10:00 Beijing time: before that hour of the day, move
    // the clock on by the hours missing, so that the test does not depend on when it runs.
    const hour = new Date(Date.now() + 8 * 3600 * 1000).getUTCHours();
    for (let k = 1; k <= Math.max(0, 10 - hour); k += 1) {
      await page.click('#clock-hour');
      await page.locator('#sim-offset', { hasText: String(86_400 + k * 3600) }).waitFor();
    }

    await page.goto(`${page.url().split('#')[0]}#/reconciliation/${today}`);
    await page.locator('#recon-form').waitFor();
    await page.click('#recon-refresh');
    await page.locator('#recon-items').waitFor({ timeout: 30_000 });

    const row = (no) => page.locator(`#recon-items tr[data-order="${no}"]`).first();
    assert.equal(await row(honest.out_trade_no).getAttribute('data-result'), 'matched');
    assert.equal(await row(honest.out_trade_no).getAttribute('class'), 'matched');
    assert.equal(await row(tampered.out_trade_no).getAttribute('data-result'), 'amount_mismatch');
    assert.equal(await row(tampered.out_trade_no).getAttribute('class'), 'mismatch');
    assert.ok((await row(tampered.out_trade_no).textContent()).includes('金额不一致'));
    const background = await row(tampered.out_trade_no).locator('td').first().evaluate((td) => getComputedStyle(td).backgroundColor);
    assert.notEqual(background, 'rgba(0, 0, 0, 0)', 'the mismatch is highlighted');
    assert.ok(Number(await page.textContent('#recon-mismatched')) >= 1);
    assert.ok(Number(await page.textContent('#recon-matched')) >= 1);

    await page.check('#only-mismatches');
    assert.equal(await row(honest.out_trade_no).isVisible(), false);
    assert.equal(await row(tampered.out_trade_no).isVisible(), true);
    await page.uncheck('#only-mismatches');
    await screenshot(page, 'backoffice-reconciliation', { fullPage: true });
    page.assertClean();
  });
});
