// @ts-check
// An order's detail: status, items, times, WeChat's transaction number and what was refunded;
// each refund with its amount and state; an unpaid order can be paid or cancelled, a failed or closed one ordered again. `?no=ORDER`.
const client = require('../../utils/shop');
const cart = require('../../utils/cart');
const { resultUrl, payAgain } = require('../../utils/checkout');
const { yuan, lineFen, statusText, refundStatusText, dateTime, errorText } = require('../../utils/format');

/** @typedef {import('../../utils/wxpay-client').Order} Order */
/** @typedef {import('../../utils/wxpay-client').Refund} Refund */

/**
 * @typedef {object} RefundView
 * @property {string} no
 * @property {string} amount
 * @property {string} status
 * @property {string} statusText
 * @property {string} reason
 * @property {string} created
 * @property {string} succeeded
 */

/** @param {Refund} r @returns {RefundView} */
function refundView(r) {
  return {
    no: r.out_refund_no,
    amount: yuan(r.amount_fen),
    status: r.status,
    statusText: refundStatusText(r.status),
    reason: r.reason || '',
    created: dateTime(r.created_at),
    succeeded: dateTime(r.succeeded_at),
  };
}

/**
 * @typedef {object} View
 * @property {string} no
 * @property {string} status
 * @property {string} statusText
 * @property {string} amount
 * @property {{ sku: string, name: string, quantity: number, amount: string }[]} items
 * @property {string} created
 * @property {string} paid
 * @property {string} expires
 * @property {string} transactionId
 * @property {string} refunded
 * @property {string} kept
 * @property {RefundView[]} refunds
 */

/** @param {Order} o @returns {View} */
function view(o) {
  return {
    no: o.out_trade_no,
    status: o.status,
    statusText: statusText(o),
    amount: yuan(o.amount_fen),
    items: (o.items || []).map((i) => ({
      sku: i.sku,
      name: i.name,
      quantity: i.quantity,
      amount: yuan(lineFen(i.unit_price_fen, i.quantity)),
    })),
    created: dateTime(o.created_at),
    paid: dateTime(o.paid_at),
    expires: dateTime(o.expires_at),
    transactionId: o.transaction_id || '',
    refunded: o.refunded_fen > 0 ? yuan(o.refunded_fen) : '',
    kept: o.refunded_fen > 0 && o.refunded_fen < o.amount_fen ? yuan(o.amount_fen - o.refunded_fen) : '',
    refunds: (o.refunds || []).map(refundView),
  };
}

Component({
  data: {
    no: '',
    loading: true,
    error: '',
    /** @type {View | null} */
    order: null,
    /** @type {Order['items']} */
    items: [],
    busy: '',
  },
  methods: {
    /** @param {Record<string, string | undefined>} query */
    onLoad(query) {
      this.setData({ no: decodeURIComponent(query.no || '') });
      return this.reload();
    },
    async reload() {
      this.setData({ loading: this.data.order === null, error: '' });
      try {
        const order = await client.order(this.data.no);
        this.setData({ loading: false, order: view(order), items: order.items || [] });
      } catch (err) {
        this.setData({ loading: false, error: errorText(err) });
      }
    },
    async pay() {
      if (this.data.busy) return;
      this.setData({ busy: 'pay', error: '' });
      try {
        const result = await payAgain(this.data.no);
        this.setData({ busy: '' });
        wx.redirectTo({ url: resultUrl(result) });
      } catch (err) {
        this.setData({ busy: '', error: errorText(err) });
      }
    },
    close() {
      if (this.data.busy) return;
      wx.showModal({
        title: '取消订单',
        content: '取消后将无法支付，确定取消吗？',
        confirmText: '取消订单',
        cancelText: '再想想',
        success: async (res) => {
          if (!res.confirm) return;
          this.setData({ busy: 'close', error: '' });
          try {
            const order = await client.closeOrder(this.data.no);
            this.setData({ busy: '', order: view(order) });
          } catch (err) {
            this.setData({ busy: '', error: errorText(err) });
          }
        },
      });
    },
    again() {
      for (const item of this.data.items) cart.add(item.sku, item.quantity);
      wx.switchTab({ url: '/pages/cart/cart' });
    },
  },
});
