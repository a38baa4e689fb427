// @ts-check
// An order's detail: status, items, times, WeChat's transaction number and what was refunded;
// each refund with its amount and state; an unpaid order can be paid or cancelled, a failed or closed one ordered again;
// how it is delivered and where its shipping is, and for a shipped one "确认收货", which opens WeChat's
// confirm-receipt component (its answer comes back through App.onShow, then this page's onShow). `?no=ORDER`.
const client = require('../../utils/shop');
const cart = require('../../utils/cart');
const receipt = require('../../utils/receipt');
const { resultUrl, payAgain } = require('../../utils/checkout');
const { yuan, lineFen, statusText, refundStatusText, deliveryText, shippingText, dateTime, errorText } = require('../../utils/format');

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
 * @property {string} delivery
 * @property {string} deliveryText
 * @property {string} shippingState
 * @property {string} shippingText
 * @property {boolean} canConfirmReceipt shipped (or partly) and paid: "确认收货"
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
    delivery: o.delivery || '',
    deliveryText: deliveryText(o.delivery),
    shippingState: o.shipping_state || '',
    shippingText: shippingText(o.shipping_state),
    canConfirmReceipt: receipt.canConfirm(o),
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
    /** The buyer confirmed receipt in WeChat; the server may not know it yet (its push is on the way). */
    receiptConfirmed: false,
  },
  methods: {
    /** @param {Record<string, string | undefined>} query */
    onLoad(query) {
      this.setData({ no: decodeURIComponent(query.no || '') });
      return this.reload();
    },
    onShow() {
      // Back from WeChat's confirm-receipt component: App.onShow kept its answer for this order.
      const result = receipt.take(this.data.no);
      if (result) return this.receiptAnswered(result);
      return undefined;
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
    async confirmReceipt() {
      const order = this.data.order;
      if (this.data.busy || !order || !order.canConfirmReceipt) return;
      this.setData({ busy: 'receipt', error: '' });
      try {
        await receipt.open({ out_trade_no: order.no, transaction_id: order.transactionId });
        this.setData({ busy: '' });
      } catch (err) {
        const unsupported = /not supported/.test(String(/** @type {Error} */ (err).message));
        this.setData({ busy: '', error: unsupported ? '当前微信版本过低，请升级微信后确认收货' : '无法打开确认收货，请稍后重试' });
      }
    },
    /**
     * What the buyer did in WeChat's confirm-receipt component; then the order as the server has it.
     * @param {import('../../utils/receipt').ReceiptResult} result
     */
    async receiptAnswered(result) {
      if (result.status === 'success') {
        this.setData({ receiptConfirmed: true, error: '' });
        wx.showToast({ title: '已确认收货', icon: 'success' });
      } else if (result.status === 'fail') {
        this.setData({ error: result.errormsg ? `确认收货失败：${result.errormsg}` : '确认收货失败，请稍后重试' });
      }
      // A success is the buyer's word: the order shows what the server knows (it learns the
      // receipt from WeChat's message push).
      const error = this.data.error;
      await this.reload();
      if (error && !this.data.error) this.setData({ error });
    },
    again() {
      for (const item of this.data.items) cart.add(item.sku, item.quantity);
      wx.switchTab({ url: '/pages/cart/cart' });
    },
  },
});
