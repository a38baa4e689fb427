// The mini program holds no key or secret and signs nothing: the server signs the parameters of
// wx.requestPayment, and WeChat checks them (the seeds' client-side signing is what this forbids).
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
