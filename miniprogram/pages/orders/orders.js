// @ts-check
// My orders, newest first, with their status (and a paid one's shipping); an unpaid one can be paid from here.
// Above them, the way to 待收款 (the shop's transfers to the user, pages/transfers).
const client = require('../../utils/shop');
const { resultUrl, payAgain } = require('../../utils/checkout');
const { yuan, statusText, shippingText, dateTime, errorText } = require('../../utils/format');

Component({
  data: {
    loading: true,
    error: '',
    /** @type {{ no: string, status: string, statusText: string, shippingText: string, description: string, amount: string, created: string }[]} */
    orders: [],
    paying: '',
  },
  methods: {
    onShow() {
      return this.reload();
    },
    onPullDownRefresh() {
      return this.reload().then(() => wx.stopPullDownRefresh());
    },
    async reload() {
      this.setData({ loading: this.data.orders.length === 0, error: '' });
      try {
        const orders = await client.orders(50);
        this.setData({
          loading: false,
          orders: orders.map((o) => ({
            no: o.out_trade_no,
            status: o.status,
            statusText: statusText(o),
            shippingText: shippingText(o.shipping_state),
            description: o.description,
            amount: yuan(o.amount_fen),
            created: dateTime(o.created_at),
          })),
        });
      } catch (err) {
        this.setData({ loading: false, error: errorText(err) });
      }
    },
    /** 待收款: the shop's transfers to the user. */
    openTransfers() {
      wx.navigateTo({ url: '/pages/transfers/transfers' });
    },
    /** @param {WechatMiniprogram.BaseEvent} e */
    open(e) {
      wx.navigateTo({ url: `/pages/order/order?no=${encodeURIComponent(String(e.currentTarget.dataset.no))}` });
    },
    /** @param {WechatMiniprogram.BaseEvent} e */
    async pay(e) {
      if (this.data.paying) return;
      const no = String(e.currentTarget.dataset.no);
      this.setData({ paying: no });
      try {
        const result = await payAgain(no);
        this.setData({ paying: '' });
        wx.navigateTo({ url: resultUrl(result) });
      } catch (err) {
        this.setData({ paying: '' });
        wx.showToast({ title: errorText(err), icon: 'none' });
        this.setData({ error: '' });
        return this.reload();
      }
    },
  },
});
