// @ts-check
// What the pages show: yuan from integer fen, statuses, times, error messages.

/**
 * Yuan with two decimals from integer fen, by integer arithmetic (no floating-point money).
 * @param {number} fen
 * @returns {string} e.g. `¥12.50`
 */
function yuan(fen) {
  const n = Math.trunc(Number(fen) || 0);
  const sign = n < 0 ? '-' : '';
  const abs = Math.abs(n);
  const cents = abs % 100;
  return `${sign}¥${(abs - cents) / 100}.${cents < 10 ? '0' : ''}${cents}`;
}

/**
 * @param {number} unitFen
 * @param {number} quantity
 */
function lineFen(unitFen, quantity) {
  return Math.trunc(unitFen) * Math.trunc(quantity);
}

const STATUS_TEXT = {
  NOTPAY: '待支付',
  SUCCESS: '已支付',
  REFUND: '已退款',
  CLOSED: '已关闭',
  PAYERROR: '支付失败',
};

/**
 * The status as the user reads it: a partly refunded order is "部分退款".
 * @param {{ status: string, amount_fen: number, refunded_fen: number }} order
 */
function statusText(order) {
  if (order.refunded_fen > 0 && order.refunded_fen < order.amount_fen) return '部分退款';
  return /** @type {Record<string, string>} */ (STATUS_TEXT)[order.status] || order.status;
}

const REFUND_STATUS_TEXT = {
  PROCESSING: '退款中',
  SUCCESS: '已退款',
  CLOSED: '退款关闭',
  ABNORMAL: '退款异常',
};

/**
 * A refund's status as the user reads it.
 * @param {string} status `PROCESSING`, `SUCCESS`, `CLOSED` or `ABNORMAL`
 */
function refundStatusText(status) {
  return /** @type {Record<string, string>} */ (REFUND_STATUS_TEXT)[status] || status;
}

const DELIVERY_TEXT = {
  express: '快递配送',
  same_city: '同城配送',
  virtual: '虚拟商品',
  pickup: '到店自提',
};

/**
 * How the order is delivered, as the user reads it ('' when the server did not say).
 * @param {string | null | undefined} delivery `express`, `same_city`, `virtual` or `pickup`
 */
function deliveryText(delivery) {
  if (!delivery) return '';
  return /** @type {Record<string, string>} */ (DELIVERY_TEXT)[delivery] || delivery;
}

const SHIPPING_TEXT = {
  awaiting_shipment: '待发货',
  partially_shipped: '部分发货',
  shipped: '已发货',
  received: '已收货',
  settled: '已完成',
};

/**
 * Where a paid order's delivery is, as the user reads it ('' before payment: null).
 * @param {string | null | undefined} state `awaiting_shipment`, `partially_shipped`, `shipped`,
 *   `received` or `settled`
 */
function shippingText(state) {
  if (!state) return '';
  return /** @type {Record<string, string>} */ (SHIPPING_TEXT)[state] || state;
}

const TRANSFER_TEXT = {
  ACCEPTED: '处理中',
  PROCESSING: '处理中',
  WAIT_USER_CONFIRM: '待收款',
  TRANSFERING: '到账中',
  SUCCESS: '已到账',
  FAIL: '转账失败',
  CANCELING: '已撤销',
  CANCELLED: '已撤销',
};

/**
 * A merchant transfer's state as its payee reads it.
 * @param {string} status WeChat's state (`WAIT_USER_CONFIRM`, `SUCCESS`, …)
 */
function transferStatusText(status) {
  return /** @type {Record<string, string>} */ (TRANSFER_TEXT)[status] || status;
}

/** @param {number} n */
function two(n) {
  return n < 10 ? `0${n}` : String(n);
}

/**
 * Local date and time, `2026-12-01 15:30`.
 * @param {number | null | undefined} ms Unix milliseconds
 */
function dateTime(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}`;
}

/** What the user is told for an error code of the client (the server's words are for logs). */
const ERROR_TEXT = {
  network: '网络连接失败，请检查网络后重试',
  timeout: '服务器响应超时，请稍后重试',
  login_failed: '微信登录失败，请稍后重试',
  unauthorized: '登录已失效，请重新进入小程序',
  invalid_code: '微信登录失败，请稍后重试',
  rate_limited: '操作太频繁，请稍后再试',
  unknown_sku: '部分商品已下架，请返回购物车修改',
  order_expired: '订单已过期，请重新下单',
  not_found: '订单不存在',
  conflict: '订单状态已变化，请刷新后查看',
  not_payable: '订单状态已变化，请刷新后查看',
  transfer_state: '这笔转账已不能收款，请刷新后查看',
};

/**
 * @param {unknown} err
 * @returns {string}
 */
function errorText(err) {
  const code = err && typeof err === 'object' && 'code' in err ? String(err.code) : '';
  const known = /** @type {Record<string, string>} */ (ERROR_TEXT)[code];
  return known || '服务暂时不可用，请稍后重试';
}

/**
 * WeChat's reason in a `requestPayment:fail REASON` message.
 * @param {string | undefined} errMsg
 */
function payFailReason(errMsg) {
  const reason = String(errMsg || '').replace(/^requestPayment:fail\s*/, '');
  return reason || '支付失败';
}

/**
 * WeChat's reason in a `requestMerchantTransfer:fail REASON` message.
 * @param {string | undefined} errMsg
 */
function transferFailReason(errMsg) {
  const reason = String(errMsg || '').replace(/^requestMerchantTransfer:fail\s*/, '');
  return reason || '收款失败';
}

module.exports = {
  yuan,
  lineFen,
  statusText,
  refundStatusText,
  deliveryText,
  shippingText,
  dateTime,
  errorText,
  payFailReason,
  transferStatusText,
  transferFailReason,
};
