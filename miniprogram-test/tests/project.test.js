// The project as DevTools opens it: its JSON files and every page's four files. And it holds no
// key or secret and signs nothing: the server signs the parameters of wx.requestPayment, and
// WeChat checks them (the seeds' client-side signing is what this forbids).
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.join(__dirname, '..', '..', 'miniprogram');

function files(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? files(p) : [p];
  });
}

test('no file of the mini program holds a key, a secret or a signing routine', () => {
  const all = files(ROOT);
  assert.ok(all.length > 20, 'the project is there');
  const forbidden = [
    /-----BEGIN/, // PEM keys and certificates
    /secret/i, // app_secret, api keys
    /api_?v[23]_?key|apiclient|private.?key/i,
    /md5|hmac|sha-?256|createHash|createSign|crypto/i, // signing and hashing
    /paySign\s*[:=](?!\s*payment\.paySign)/, // a paySign not taken from the server's object
    /[0-9a-zA-Z]{32}/, // anything shaped like a 32-character key
  ];
  for (const file of all) {
    const text = fs.readFileSync(file, 'utf8')
      // The signType values name the algorithms WeChat uses: names, not code.
      .replace(/'RSA' \| 'MD5' \| 'HMAC-SHA256'/g, '');
    for (const pattern of forbidden) {
      assert.ok(!pattern.test(text), `${path.relative(ROOT, file)} matches ${pattern}`);
    }
  }
});

test('the project opens in DevTools: valid JSON, every page with its four files', () => {
  const read = (name) => JSON.parse(fs.readFileSync(path.join(ROOT, name), 'utf8'));
  const project = read('project.config.json');
  assert.equal(project.compileType, 'miniprogram');
  assert.ok(project.appid && project.libVersion);
  const app = read('app.json');
  assert.ok(app.pages.length >= 6);
  for (const page of app.pages) {
    for (const ext of ['js', 'json', 'wxml', 'wxss']) {
      assert.ok(fs.existsSync(path.join(ROOT, `${page}.${ext}`)), `${page}.${ext}`);
    }
    // Pages are built with Component(): their JSON must say so with usingComponents.
    assert.deepEqual(read(`${page}.json`).usingComponents, {}, page);
  }
  for (const tab of app.tabBar.list) assert.ok(app.pages.includes(tab.pagePath), tab.pagePath);
  const sitemap = read(app.sitemapLocation);
  assert.ok(Array.isArray(sitemap.rules));
});

test('refund states read in Chinese, amounts in yuan from integer fen', () => {
  const { refundStatusText, yuan } = require(path.join(ROOT, 'utils', 'format.js'));
  assert.deepEqual(
    ['PROCESSING', 'SUCCESS', 'CLOSED', 'ABNORMAL'].map(refundStatusText),
    ['退款中', '已退款', '退款关闭', '退款异常'],
  );
  assert.equal(yuan(250), '¥2.50');
  assert.equal(yuan(1), '¥0.01');
});
