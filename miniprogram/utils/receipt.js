// @ts-check
// WeChat's confirm-receipt component (小程序确认收货组件): WeChat holds the money of a managed
// mini program's payment until the buyer confirms receipt there, so the order page opens it with
// `wx.openBusinessView({ businessType: 'weappOrderConfirm', extraData: { transaction_id } })`.
// The component is another (half-screen) mini program: its `success` only says it opened. The
// answer comes back when it returns to this one, in App.onShow's `referrerInfo` (appId
// wx1183b055aeec94d1, `extraData`: `status` success / cancel / fail, `errormsg` for fail,
// `req_extradata` the extraData it was opened with). A success is the buyer's word, not proof:
// the page asks the server again (which learns it from WeChat's message push).

/** The appId of WeChat's confirm-receipt component, as referrerInfo names it. */
const RECEIPT_APPID = 'wx1183b055aeec94d1';
/** Which order the component was opened for: the answer names its transaction, not our order. */
const PENDING_KEY = 'shop.receipt.pending';

/**
 * @typedef {object} ReceiptResult
 * @property {'success' | 'cancel' | 'fail'} status
 * @property {string} errormsg WeChat's reason, for `fail`
 * @property {string} no the order (out_trade_no), '' when it cannot be told
 * @property {string} transactionId
 */

/**
 * @typedef {object} OpenBusinessViewOption
 * @property {string} businessType
 * @property {Record<string, string>} extraData
 * @property {(res: { errMsg: string }) => void} [success]
 * @property {(err: { errMsg: string }) => void} [fail]
 */

/** @type {ReceiptResult[]} answers App.onShow received that no page took yet */
let results = [];

/** wx.openBusinessView, when this WeChat has it (base library 2.6.0; not in the typings). */
function openBusinessView() {
  const api = /** @type {{ openBusinessView?: (o: OpenBusinessViewOption) => void }} */ (/** @type {unknown} */ (wx));
  return typeof api.openBusinessView === 'function' ? api.openBusinessView.bind(wx) : null;
}

/**
 * Opens WeChat's confirm-receipt component for a paid order. Resolves once it is open (its
 * answer comes to App.onShow: see `accept`); rejects with WeChat's errMsg when it cannot open.
 * @param {{ out_trade_no: string, transaction_id: string | null }} order
 * @returns {Promise<void>}
 */
function open(order) {
  return new Promise((resolve, reject) => {
    const openView = openBusinessView();
    if (!openView) {
      reject(new Error('openBusinessView:fail not supported'));
      return;
    }
    if (!order.transaction_id) {
      // merchant_id + merchant_trade_no would do too, but the buyer's API has no merchant id.
      reject(new Error('openBusinessView:fail the order has no transaction_id'));
      return;
    }
    wx.setStorageSync(PENDING_KEY, { no: order.out_trade_no, transaction_id: order.transaction_id });
    openView({
      businessType: 'weappOrderConfirm',
      extraData: { transaction_id: order.transaction_id },
      success: () => resolve(),
      fail: (err) => reject(new Error((err && err.errMsg) || 'openBusinessView:fail')),
    });
  });
}

/**
 * App.onShow: keeps the component's answer when the mini program comes back from it.
 * @param {Partial<WechatMiniprogram.App.LaunchShowOption> | undefined} options
 * @returns {ReceiptResult | null} the answer, null when this show is not the component's return
 */
function accept(options) {
  const referrer = options && options.referrerInfo;
  if (!referrer || referrer.appId !== RECEIPT_APPID || !referrer.extraData) return null;
  const extra = referrer.extraData;
  const status = extra.status === 'success' || extra.status === 'cancel' ? extra.status : 'fail';
  const req = extra.req_extradata && typeof extra.req_extradata === 'object' ? extra.req_extradata : {};
  const transactionId = typeof req.transaction_id === 'string' ? req.transaction_id : '';
  const pending = wx.getStorageSync(PENDING_KEY);
  let no = typeof req.merchant_trade_no === 'string' ? req.merchant_trade_no : '';
  if (!no && pending && transactionId && pending.transaction_id === transactionId) no = String(pending.no);
  wx.removeStorageSync(PENDING_KEY);
  /** @type {ReceiptResult} */
  const result = { status, errormsg: typeof extra.errormsg === 'string' ? extra.errormsg : '', no, transactionId };
  results.push(result);
  return result;
}

/**
 * The order page: the component's answer for this order, once (null when none came).
 * @param {string} no
 * @returns {ReceiptResult | null}
 */
function take(no) {
  const found = results.find((r) => r.no === no);
  if (!found) return null;
  results = results.filter((r) => r !== found);
  return found;
}

/**
 * Whether the buyer can confirm receipt: the order is shipped (or partly) and was paid.
 * @param {{ shipping_state?: string | null, transaction_id: string | null }} order
 */
function canConfirm(order) {
  return (order.shipping_state === 'shipped' || order.shipping_state === 'partially_shipped') && Boolean(order.transaction_id);
}

module.exports = { RECEIPT_APPID, open, accept, take, canConfirm };
