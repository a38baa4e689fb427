// wechatpay-axios-plugin (npm) against `wxpay sim`, unpatched: it signs every request and verifies
// every v3 answer (and every v2 answer's sign) with its own code.
//
// Usage: SIM="<url> <state dir>" node axios_flow.js   (a simulator in certificate key mode)
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const https = require('node:https');
const path = require('node:path');
const {
  Wechatpay, Aes, Formatter, Hash, Rsa,
} = require('wechatpay-axios-plugin');

const [url, dir] = process.env.SIM.split(' ');
const merchant = JSON.parse(fs.readFileSync(path.join(dir, 'merchant.json'), 'utf8'));
const file = (key) => fs.readFileSync(path.join(dir, merchant[key]));
const ca = file('sim_ca_cert');
const base = url.replace('http://', 'https://');
const platformCert = file('platform_cert').toString();
const platformSerial = new (require('node:crypto').X509Certificate)(platformCert).serialNumber.toUpperCase();

const ok = (name) => console.log(`  ok  ${name}`);

async function control(method, p, body) {
  const response = await fetch(`${url}${p}`, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

async function main() {
  const wxpay = new Wechatpay({
    mchid: merchant.mchid,
    serial: merchant.merchant_serial,
    privateKey: file('apiclient_key'),
    certs: { [platformSerial]: platformCert },
    secret: merchant.api_v2_key,
    // The .p12 client certificate for the v2 /secapi/ calls (password: the mchid).
    merchant: { pfx: file('apiclient_cert_p12'), passphrase: merchant.mchid, ca },
    baseURL: `${base}/`,
    httpsAgent: new https.Agent({ ca }),
  });
  const { mchid, appid } = merchant;
  const user = await control('POST', '/sim/users', {});
  assert.equal(user.status, 200);
  const { openid } = user.body;
  const no = `AX3-${Date.now()}`;

  // v3 (every answer's signature verified by the plugin's responseVerifier)
  const certs = await wxpay.v3.certificates.get();
  const [entry] = certs.data.data;
  const { ciphertext, nonce, associated_data: aad } = entry.encrypt_certificate;
  const pem = Aes.AesGcm.decrypt(ciphertext, merchant.api_v3_key, nonce, aad);
  assert.equal(entry.serial_no, platformSerial);
  assert.equal(pem.trim(), platformCert.trim());
  ok('v3 certificates: downloaded, verified, decrypted with the APIv3 key');

  const notify = 'http://127.0.0.1:9/notify';
  const prepay = await wxpay.v3.pay.transactions.jsapi.post({
    appid, mchid, description: 'Coffee', out_trade_no: no, notify_url: `${notify}/pay`,
    amount: { total: 1250, currency: 'CNY' }, payer: { openid },
  });
  assert.match(prepay.data.prepay_id, /^wx/);
  ok('v3 prepay (jsapi)');

  // Pay as the WeChat client with the plugin's own paySign.
  const timeStamp = `${Formatter.timestamp()}`;
  const nonceStr = Formatter.nonce();
  const pkg = `prepay_id=${prepay.data.prepay_id}`;
  const paySign = Rsa.sign(Formatter.joinedByLineFeed(appid, timeStamp, nonceStr, pkg), file('apiclient_key').toString());
  const paid = await control('POST', '/sim/pay', {
    appId: appid, timeStamp, nonceStr, package: pkg, signType: 'RSA', paySign, openid,
  });
  assert.equal(paid.status, 200, JSON.stringify(paid.body));

  const query = await wxpay.v3.pay.transactions.outTradeNo._out_trade_no_.get({ params: { mchid }, out_trade_no: no });
  assert.equal(query.data.trade_state, 'SUCCESS');
  const transactionId = query.data.transaction_id;
  const byId = await wxpay.v3.pay.transactions.id._transaction_id_.get({ params: { mchid }, transaction_id: transactionId });
  assert.equal(byId.data.out_trade_no, no);
  ok('v3 query (by out_trade_no and transaction_id)');

  const other = `${no}-C`;
  await wxpay.v3.pay.transactions.jsapi.post({
    appid, mchid, description: 'Tea', out_trade_no: other, notify_url: `${notify}/pay`,
    amount: { total: 300 }, payer: { openid },
  });
  const closed = await wxpay.v3.pay.transactions.outTradeNo._out_trade_no_.close.post({ mchid }, { out_trade_no: other });
  assert.equal(closed.status, 204);
  ok('v3 close (204)');

  const outRefundNo = `${no}-R1`;
  const refund = await wxpay.v3.refund.domestic.refunds.post({
    transaction_id: transactionId, out_refund_no: outRefundNo,
    amount: { refund: 250, total: 1250, currency: 'CNY' },
  });
  assert.equal(refund.data.out_refund_no, outRefundNo);
  const refundQuery = await wxpay.v3.refund.domestic.refunds._out_refund_no_.get({ out_refund_no: outRefundNo });
  assert.equal(refundQuery.data.out_refund_no, outRefundNo);
  ok('v3 refund and refund query');

  // v2 (XML; every answer's sign verified by the plugin's transformer)
  const v2no = `AX2-${Date.now()}`;
  const order = await wxpay.v2.pay.unifiedorder({
    appid, mch_id: mchid, body: 'Coffee', out_trade_no: v2no, total_fee: '1250',
    spbill_create_ip: '127.0.0.1', notify_url: `${notify}/v2`, trade_type: 'JSAPI', openid,
  });
  assert.equal(order.data.result_code, 'SUCCESS');
  ok('v2 unifiedorder');

  // The v2 paySign (MD5) as the plugin computes it.
  const v2params = { appId: appid, timeStamp: `${Formatter.timestamp()}`, nonceStr: Formatter.nonce(), package: `prepay_id=${order.data.prepay_id}`, signType: 'MD5' };
  v2params.paySign = Hash.sign('MD5', v2params, merchant.api_v2_key);
  const paid2 = await control('POST', '/sim/pay', { ...v2params, openid });
  assert.equal(paid2.status, 200, JSON.stringify(paid2.body));

  const q2 = await wxpay.v2.pay.orderquery({ appid, mch_id: mchid, out_trade_no: v2no });
  assert.equal(q2.data.trade_state, 'SUCCESS');
  const v2tx = q2.data.transaction_id;
  ok('v2 orderquery');

  const v2other = `${v2no}C`;
  await wxpay.v2.pay.unifiedorder({
    appid, mch_id: mchid, body: 'Tea', out_trade_no: v2other, total_fee: '300',
    spbill_create_ip: '127.0.0.1', notify_url: `${notify}/v2`, trade_type: 'JSAPI', openid,
  });
  const close2 = await wxpay.v2.pay.closeorder({ appid, mch_id: mchid, out_trade_no: v2other });
  assert.equal(close2.data.result_code, 'SUCCESS');
  ok('v2 closeorder');

  const v2refundNo = `${v2no}R1`;
  const refund2 = await wxpay.v2.secapi.pay.refund({
    appid, mch_id: mchid, transaction_id: v2tx, out_refund_no: v2refundNo, total_fee: '1250', refund_fee: '250',
  }, { security: true });
  assert.equal(refund2.data.result_code, 'SUCCESS');
  ok('v2 refund over TLS with the .p12 client certificate');

  const rq2 = await wxpay.v2.pay.refundquery({ appid, mch_id: mchid, out_refund_no: v2refundNo });
  assert.equal(rq2.data.out_refund_no_0, v2refundNo);
  ok('v2 refundquery');

  // Today's bill exists from 10:00 tomorrow, Beijing time: two days on is always past it.
  const clock = await control('GET', '/sim/clock');
  const day = clock.body.now.slice(0, 10);
  assert.equal((await control('POST', '/sim/clock/advance', { seconds: 172800 })).status, 200);
  // castCsvBill takes the file's bytes; axios would decode a text answer and strip its BOM, so
  // the bill is fetched as bytes, as a bill file read from disk would be.
  const bill = await wxpay.v2.pay.downloadbill({
    appid, mch_id: mchid, bill_date: day.replace(/-/g, ''), bill_type: 'ALL',
  }, { responseType: 'arraybuffer', transformResponse: [] });
  const bytes = Buffer.from(bill.data);
  assert.deepEqual([...bytes.subarray(0, 3)], [0xef, 0xbb, 0xbf], 'a bill starts with the BOM');
  const { rows, summary } = Formatter.castCsvBill(bytes);
  assert.ok(rows.some((r) => r['商户订单号'] === v2no), JSON.stringify(rows));
  assert.ok(Object.keys(rows[0]).includes('交易时间'), Object.keys(rows[0]).join(','));
  assert.ok(summary['总交易单数'] >= 1);
  ok("v2 downloadbill, cast by the plugin's castCsvBill");
}

main().catch((e) => {
  console.error(e && e.response ? { status: e.response.status, data: e.response.data } : e);
  console.error('FAILED');
  process.exit(1);
});
