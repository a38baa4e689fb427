// @ts-check
// The payment's result: paid, cancelled by the user, failed (in WeChat's words), or still being
// confirmed by the server. `?no=ORDER&status=paid|cancelled|failed|confirming[&msg=errMsg]`.
const client = require('../../utils/shop');
const { resultUrl, payAgain } = require('../../utils/checkout');
const { yuan, errorText, payFailReason } = require('../../utils/format');

/** @typedef {'paid' | 'cancelled' | 'failed' | 'confirming'} Outcome */
/** @typedef {import('../../utils/wxpay-client').Order} Order */

const VIEWS = {
  paid: { icon: 'success', mark: '✓', title: '支付成功' },
  cancelled: { icon: 'info', mark: 'i', title: '已取消支付' },
  failed: { icon: 'warn', mark: '!', title: '支付失败' },
  confirming: { icon: 'waiting', mark: '…', title: '正在确认支付结果' },
};

Component({
  data: {
    no: '',
    /** @type {Outcome} */
    status: 'confirming',
    msg: '',
    icon: '',
    mark: '',
    title: '',
    desc: '',
    amount: '',
    description: '',
    error: '',
    busy: false,
  },
  methods: {
    /** @param {Record<string, string | undefined>} query */
    onLoad(query) {
      const status = /** @type {Outcome} */ (query.status && query.status in VIEWS ? query.status : 'confirming');
      const no = decodeURIComponent(query.no || '');
      this.setData({ no, msg: decodeURIComponent(query.msg || '') });
      this.show(status);
      return this.load();
    },
    /** @param {Outcome} status @param {Order} [order] */
    show(status, order) {
      const view = VIEWS[status];
      let desc = '';
      if (status === 'paid') desc = '商户已收到付款';
      else if (status === 'cancelled') desc = '订单尚未支付，可继续支付或在“我的订单”中支付';
      else if (status === 'failed') desc = payFailReason(this.data.msg);
      else desc = '微信支付已完成，商户正在确认，请稍后刷新';
      /** @type {Record<string, any>} */
      const update = { status, icon: view.icon, mark: view.mark, title: view.title, desc };
      if (order) {
        update.amount = yuan(order.amount_fen);
        update.description = order.description;
      }
      this.setData(update);
    },
    /** The order, for its amount; the server's word wins over the outcome passed in. */
    async load() {
      try {
        const order = await client.order(this.data.no);
        const paid = order.status === 'SUCCESS' || order.status === 'REFUND';
        this.show(paid ? 'paid' : this.data.status, order);
      } catch (err) {
        this.setData({ error: errorText(err) });
      }
    },
    async refresh() {
      if (this.data.busy) return;
      this.setData({ busy: true, error: '' });
      const order = await client.confirm(this.data.no);
      this.setData({ busy: false });
      if (!order) {
        this.setData({ error: errorText({ code: 'network' }) });
        return;
      }
      const paid = order.status === 'SUCCESS' || order.status === 'REFUND';
      this.show(paid ? 'paid' : order.status === 'NOTPAY' ? 'confirming' : 'failed', order);
    },
    async payAgain() {
      if (this.data.busy) return;
      this.setData({ busy: true, error: '' });
      try {
        const result = await payAgain(this.data.no);
        wx.redirectTo({ url: resultUrl(result) });
      } catch (err) {
        this.setData({ busy: false, error: errorText(err) });
      }
    },
    viewOrder() {
      wx.navigateTo({ url: `/pages/order/order?no=${encodeURIComponent(this.data.no)}` });
    },
    goShop() {
      wx.switchTab({ url: '/pages/catalog/catalog' });
    },
  },
});
