// @ts-check
// The cart: its lines priced with the server's catalogue (a product no longer sold drops out).
const client = require('../../utils/shop');
const cart = require('../../utils/cart');
const { yuan, errorText } = require('../../utils/format');

/** @typedef {import('../../utils/wxpay-client').Product} Product */

Component({
  data: {
    loading: true,
    error: '',
    /** @type {Product[]} */
    catalogue: [],
    /** @type {{ sku: string, name: string, quantity: number, price: string }[]} */
    lines: [],
    total: '',
  },
  methods: {
    onShow() {
      return this.reload();
    },
    async reload() {
      this.setData({ loading: this.data.lines.length === 0, error: '' });
      try {
        this.setData({ catalogue: await client.products() });
        this.draw();
        this.setData({ loading: false });
      } catch (err) {
        this.setData({ loading: false, error: errorText(err) });
      }
    },
    draw() {
      const lines = cart.lines(this.data.catalogue);
      this.setData({
        lines: lines.map((l) => ({ sku: l.sku, name: l.name, quantity: l.quantity, price: yuan(l.price_fen) })),
        total: yuan(lines.reduce((n, l) => n + l.line_fen, 0)),
      });
    },
    /** @param {WechatMiniprogram.BaseEvent} e */
    more(e) {
      cart.add(String(e.currentTarget.dataset.sku), 1);
      this.draw();
    },
    /** @param {WechatMiniprogram.BaseEvent} e */
    less(e) {
      cart.add(String(e.currentTarget.dataset.sku), -1);
      this.draw();
    },
    checkout() {
      wx.navigateTo({ url: '/pages/confirm/confirm' });
    },
    goShop() {
      wx.switchTab({ url: '/pages/catalog/catalog' });
    },
  },
});
