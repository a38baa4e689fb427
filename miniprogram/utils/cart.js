// @ts-check
// The cart, kept in storage: sku → quantity. Prices are the server's; the cart keeps none.

const KEY = 'shop.cart';
const MAX_QUANTITY = 99;

/** @returns {Record<string, number>} */
function read() {
  try {
    const saved = wx.getStorageSync(KEY);
    return saved && typeof saved === 'object' ? saved : {};
  } catch (e) {
    return {};
  }
}

/** @param {Record<string, number>} cart */
function write(cart) {
  wx.setStorageSync(KEY, cart);
}

/** @param {string} sku @param {number} quantity */
function set(sku, quantity) {
  const cart = read();
  if (quantity <= 0) delete cart[sku];
  else cart[sku] = Math.min(Math.trunc(quantity), MAX_QUANTITY);
  write(cart);
  return cart;
}

/** @param {string} sku @param {number} delta */
function add(sku, delta) {
  return set(sku, (read()[sku] || 0) + delta);
}

function clear() {
  write({});
}

/** @returns {number} */
function count() {
  const cart = read();
  return Object.keys(cart).reduce((n, sku) => n + cart[sku], 0);
}

/**
 * The cart's lines with the catalogue's names and prices; a product no longer sold is dropped.
 * @param {{ sku: string, name: string, price_fen: number }[]} products
 */
function lines(products) {
  const cart = read();
  /** @type {{ sku: string, name: string, quantity: number, price_fen: number, line_fen: number }[]} */
  const out = [];
  for (const p of products) {
    const quantity = cart[p.sku];
    if (quantity > 0) {
      out.push({ sku: p.sku, name: p.name, quantity, price_fen: p.price_fen, line_fen: p.price_fen * quantity });
    }
  }
  return out;
}

module.exports = { read, set, add, clear, count, lines, MAX_QUANTITY };
