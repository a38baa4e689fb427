// @ts-check
// Order confirmation: the cart priced by the server's catalogue, then "微信支付": the order is
// placed (the server prices it again), WeChat's cashier opens with the server's parameters, and
// the result page shows what the server confirmed.
const client = require('../../utils/shop');
const cart = require('../../utils/cart');
const { resultUrl } = require('../../utils/checkout');
const { yuan, errorText } = require('../../utils/format');

Component({
  data: {
    loading: true,
    error: '',
    /** @type {{ sku: string, name: string, quantity: number, amount: string }[]} */
    lines: [],
    total: '',
    paying: false,
  },
  methods: {
    onLoad() {
      return this.reload();
    },
    async reload() {
      this.setData({ loading: true, error: '' });
      try {
        const lines = cart.lines(await client.products());
        this.setData({
          loading: false,
          lines: lines.map((l) => ({ sku: l.sku, name: l.name, quantity: l.quantity, amount: yuan(l.line_fen) })),
          total: yuan(lines.reduce((n, l) => n + l.line_fen, 0)),
        });
      } catch (err) {
        this.setData({ loading: false, error: errorText(err) });
      }
    },
    async pay() {
      // this.data changes at once with setData: a second tap before the button is redrawn
      // disabled stops here, so two quick taps make one order.
      if (this.data.paying || this.data.lines.length === 0) return;
      this.setData({ paying: true, error: '' });
      /** @type {import('../../utils/wxpay-client').Order} */
      let order;
      try {
        order = await client.createOrder(this.data.lines);
      } catch (err) {
        // No order was made: the cart stays as it is, to try again.
        this.setData({ paying: false, error: errorText(err) });
        return;
      }
      // The order exists now, paid or not: the cart has done its job.
      cart.clear();
      const result = await client.pay(order);
      wx.redirectTo({ url: resultUrl(result) });
    },
  },
});
