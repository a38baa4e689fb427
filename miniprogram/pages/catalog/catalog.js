// @ts-check
// The catalogue: the server's active products with a quantity stepper each; the cart is kept
// in storage and priced by the server when the order is placed.
const client = require('../../utils/shop');
const cart = require('../../utils/cart');
const { yuan, errorText } = require('../../utils/format');

/**
 * @typedef {import('../../utils/wxpay-client').Product} Product
 * @typedef {Product & { price: string, initial: string, quantity: number }} Row
 */

Component({
  data: {
    loading: true,
    error: '',
    /** @type {Row[]} */
    products: [],
    count: 0,
    total: '',
  },
  methods: {
    onLoad() {
      return this.reload();
    },
    onShow() {
      // The cart may have changed on another page.
      if (!this.data.loading && !this.data.error) this.draw(this.data.products);
    },
    onPullDownRefresh() {
      return this.reload().then(() => wx.stopPullDownRefresh());
    },
    async reload() {
      this.setData({ loading: true, error: '' });
      try {
        const products = await client.products();
        this.draw(products);
        this.setData({ loading: false });
      } catch (err) {
        this.setData({ loading: false, error: errorText(err) });
      }
    },
    /** @param {Product[]} products */
    draw(products) {
      const quantities = cart.read();
      const rows = products.map((p) => ({
        sku: p.sku,
        name: p.name,
        description: p.description,
        price_fen: p.price_fen,
        price: yuan(p.price_fen),
        initial: p.name.charAt(0),
        quantity: quantities[p.sku] || 0,
      }));
      const lines = cart.lines(products);
      this.setData({
        products: rows,
        count: lines.reduce((n, l) => n + l.quantity, 0),
        total: yuan(lines.reduce((n, l) => n + l.line_fen, 0)),
      });
    },
    /** @param {WechatMiniprogram.BaseEvent} e */
    more(e) {
      cart.add(String(e.currentTarget.dataset.sku), 1);
      this.draw(this.data.products);
    },
    /** @param {WechatMiniprogram.BaseEvent} e */
    less(e) {
      cart.add(String(e.currentTarget.dataset.sku), -1);
      this.draw(this.data.products);
    },
    checkout() {
      wx.navigateTo({ url: '/pages/confirm/confirm' });
    },
  },
});
