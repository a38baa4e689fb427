// @ts-check
// Paying from any page: the result page's address for a PayResult, and "pay again".
const client = require('./shop');

/**
 * @param {import('./wxpay-client').PayResult} result
 * @returns {string}
 */
function resultUrl(result) {
  let url = `/pages/result/result?no=${encodeURIComponent(result.order.out_trade_no)}&status=${result.status}`;
  if (result.errMsg) url += `&msg=${encodeURIComponent(result.errMsg)}`;
  return url;
}

/**
 * Fresh parameters for an unpaid order, then WeChat's cashier, then the server's word.
 * @param {string} no
 */
async function payAgain(no) {
  return client.pay(await client.repay(no));
}

module.exports = { resultUrl, payAgain };
