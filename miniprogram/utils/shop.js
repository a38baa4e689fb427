// @ts-check
// The shop's one client of the server, configured by config.js.
const config = require('../config');
const { createClient } = require('./wxpay-client');
const { sandboxWechat } = require('./sandbox-wechat');

module.exports = createClient({
  baseUrl: config.baseUrl,
  timeoutMs: config.timeoutMs,
  wechat: config.sandbox ? sandboxWechat(config.baseUrl) : undefined,
});
