// @ts-check
// The shop's one client of the server, configured by config.js.
const config = require('../config');
const { createClient } = require('./wxpay-client');

module.exports = createClient({ baseUrl: config.baseUrl, timeoutMs: config.timeoutMs });
