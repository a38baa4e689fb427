// The mini-program emulator (sandbox mode): a phone that logs in with wx.login, lists the
// catalog, keeps a cart, orders, shows WeChat's cashier and pays through the simulator exactly
// as the WeChat client would (POST /sim/pay with the wx.requestPayment object), then waits for
// the merchant server to learn the result. The developer panel chooses which of the simulated
// WeChat's mini programs the phone runs (GET /sim/apps); logins name it (`appid`).
// "待收款" lists the merchant's transfers to the user (GET /api/transfers); for one waiting, the
// server answers the wx.requestMerchantTransfer object and WeChat's 确认收款 sheet posts it to the
// simulator (POST /sim/transfers/confirm), then the list follows it until its state is final.

import {
  HttpError,
  bindLanguageSwitch,
  dateTime,
  h,
  money,
  replace,
  request,
  sleep,
  orderStatusBadge,
  orderStatusKey,
  t,
  totalFen,
  translatePage,
} from './common.js';

const SESSION_KEY = 'wxpay.emulator.session';
const CART_KEY = 'wxpay.emulator.cart';
const APP_KEY = 'wxpay.emulator.appid';
const CONFIRMED_KEY = 'wxpay.emulator.confirmed';
const SHIPPING_STATES = ['awaiting_shipment', 'partially_shipped', 'shipped', 'received', 'settled'];
const DELIVERIES = ['express', 'same_city', 'virtual', 'pickup'];
// How long the order page waits for the merchant server to learn of a confirmed receipt.
const RECEIPT_POLL_LIMIT_MS = 10_000;
const POLL_MS = 1000;
const POLL_LIMIT_MS = 60_000;
const LOG_LIMIT = 40;
const TRANSFER_STATES = ['ACCEPTED', 'PROCESSING', 'WAIT_USER_CONFIRM', 'TRANSFERING', 'SUCCESS', 'FAIL', 'CANCELING', 'CANCELLED'];
const TRANSFER_FINAL = ['SUCCESS', 'FAIL', 'CANCELLED'];

const screen = document.getElementById('screen');
const navTitle = document.getElementById('nav-title');
const navBack = document.getElementById('nav-back');
const tabBar = document.getElementById('tab-bar');
const cartCount = document.getElementById('cart-count');
const devLog = document.getElementById('dev-log');
const devPayment = document.getElementById('dev-payment');
const devUser = document.getElementById('dev-user');
const payErrorSwitch = document.getElementById('switch-payerror');
const tamperSwitch = document.getElementById('switch-tamper');
const appSelect = document.getElementById('app-select');

let session = load(SESSION_KEY); // {token, openid, appid}
// The mini programs of the simulated WeChat ({appid, mchid}) and the one this phone runs.
let apps = [];
let appid = load(APP_KEY);
let cart = load(CART_KEY) || {}; // sku -> quantity
let products = [];
let merchant = null;
// Orders whose receipt this phone confirmed (WeChat then settles; the server learns it by push).
let confirmed = new Set(load(CONFIRMED_KEY) || []);
// The pages opened, the current one last; the back button pops it.
let stack = [];
// Bumped by every page change; a page's async work stops writing once it is stale.
let renderSeq = 0;

function load(key) {
  try {
    return JSON.parse(sessionStorage.getItem(key) || 'null');
  } catch {
    return null;
  }
}

function save(key, value) {
  try {
    if (value === null) sessionStorage.removeItem(key);
    else sessionStorage.setItem(key, JSON.stringify(value));
  } catch {
    // Storage refused (private window): the emulator still works until the page is closed.
  }
}

// ---------------------------------------------------------------- the developer panel

function redact(value) {
  if (!value || typeof value !== 'object') return value;
  const copy = Array.isArray(value) ? [...value] : { ...value };
  if (typeof copy.token === 'string') copy.token = `${copy.token.slice(0, 6)}…`;
  // A transfer's confirm package is the user's key to WeChat's 确认收款 page: never shown.
  if (typeof copy.package === 'string' && typeof copy.mchId === 'string') copy.package = '…';
  return copy;
}

function logExchange({ method, path, status, request: body, response }) {
  const line = h(
    'li',
    { class: status >= 200 && status < 300 ? 'ok' : 'bad' },
    h('details', {},
      h('summary', { class: 'mono', text: `${method} ${path} → ${status || t('error.network')}` }),
      body === undefined ? null : h('pre', { class: 'code', text: `→ ${JSON.stringify(redact(body), null, 2)}` }),
      h('pre', { class: 'code', text: `← ${JSON.stringify(redact(response), null, 2)}` })),
  );
  devLog.prepend(line);
  while (devLog.children.length > LOG_LIMIT) devLog.lastChild.remove();
}

function logNote(text) {
  devLog.prepend(h('li', { class: 'note', text }));
}

async function call(method, path, { body, auth = false } = {}) {
  try {
    return await request(method, path, {
      body,
      token: auth && session ? session.token : undefined,
      onExchange: logExchange,
    });
  } catch (err) {
    if (auth && err.status === 401) {
      session = null;
      save(SESSION_KEY, null);
      showUser();
      toast(t('emu.session_expired'));
      open('login', {}, { reset: true });
    }
    throw err;
  }
}

function showUser() {
  devUser.textContent = session ? session.openid : '—';
}

/** The merchant id of the mini program the phone runs (the cashier names it). */
function currentMchid() {
  const app = apps.find((a) => a.appid === appid);
  return app ? app.mchid : merchant ? merchant.mchid : '';
}

/** Fills the developer panel's mini-program choice; switching logs out (sessions are per mini program). */
function showApps() {
  replace(appSelect, apps.map((a) => h('option', { value: a.appid, selected: a.appid === appid, text: t('emu.app_line', { appid: a.appid, mchid: a.mchid }) })));
  appSelect.disabled = apps.length < 2;
}

function chooseApp(chosen) {
  appid = chosen;
  save(APP_KEY, appid);
  if (session && session.appid !== appid) {
    session = null;
    save(SESSION_KEY, null);
    showUser();
  }
  logNote(`mini program → ${appid}`);
  open('login', {}, { reset: true });
}

// ---------------------------------------------------------------- phone chrome

let toastTimer = null;

function toast(text) {
  const el = document.getElementById('toast');
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    el.hidden = true;
  }, 1800);
}

/** wx.showModal: resolves when dismissed. */
function modal(title, text) {
  const backdrop = document.getElementById('modal');
  document.getElementById('modal-title').textContent = title;
  document.getElementById('modal-text').textContent = text;
  backdrop.hidden = false;
  return new Promise((resolve) => {
    const ok = document.getElementById('modal-ok');
    const close = () => {
      backdrop.hidden = true;
      ok.removeEventListener('click', close);
      resolve();
    };
    ok.addEventListener('click', close);
    ok.focus();
  });
}

function tickClock() {
  const d = new Date();
  document.getElementById('phone-clock').textContent = `${d.getHours()}:${String(d.getMinutes()).padStart(2, '0')}`;
}

function updateCartCount() {
  const n = Object.values(cart).reduce((a, b) => a + b, 0);
  cartCount.textContent = String(n);
  cartCount.hidden = n === 0;
}

const PAGES = {
  login: { title: 'emu.shop_name', tab: null, render: loginPage },
  shop: { title: 'emu.shop_name', tab: 'shop', render: shopPage },
  cart: { title: 'emu.tab.cart', tab: 'cart', render: cartPage },
  orders: { title: 'emu.my_orders', tab: 'orders', render: ordersPage },
  order: { title: 'emu.order_detail', tab: null, render: orderPage },
  me: { title: 'emu.tab.me', tab: 'me', render: mePage },
  transfers: { title: 'emu.transfers', tab: null, render: transfersPage },
};

/** Opens a page (wx.navigateTo), or with `reset` starts a new stack (wx.switchTab / reLaunch). */
function open(name, params = {}, { reset = false } = {}) {
  if (name !== 'login' && !session) {
    name = 'login';
    params = {};
    reset = true;
  }
  if (reset) stack = [];
  stack.push({ name, params });
  show();
}

function back() {
  if (stack.length > 1) {
    stack.pop();
    show();
  }
}

function show() {
  renderSeq += 1;
  const { name, params } = stack[stack.length - 1];
  const page = PAGES[name];
  navTitle.textContent = t(page.title);
  navBack.hidden = stack.length < 2;
  tabBar.hidden = !session || name === 'login';
  for (const button of tabBar.querySelectorAll('button[data-tab]')) {
    button.classList.toggle('active', button.dataset.tab === page.tab);
  }
  screen.dataset.page = name;
  screen.scrollTop = 0;
  const seq = renderSeq;
  Promise.resolve(page.render(params, seq)).catch((err) => {
    if (seq === renderSeq) replace(screen, errorView(err));
  });
}

function errorView(err) {
  return h('div', { class: 'empty' }, h('p', { class: 'error-text', text: err instanceof HttpError ? err.message : String(err) }),
    h('button', { type: 'button', class: 'wx-default', text: t('emu.retry'), onclick: show }));
}

// ---------------------------------------------------------------- login

function loginPage() {
  replace(
    screen,
    h('div', { class: 'login-page' },
      h('div', { class: 'logo', 'aria-hidden': 'true', text: 'wx' }),
      h('h2', { text: t('emu.shop_name') }),
      h('p', { class: 'muted', text: t('emu.login_help') }),
      appid ? h('p', { class: 'mono small muted', id: 'login-app', text: t('emu.app_line', { appid, mchid: currentMchid() }) }) : null,
      h('button', { type: 'button', class: 'wx-primary', id: 'login-button', text: t('emu.login'), onclick: login })),
  );
}

async function login(event) {
  const button = event && event.currentTarget;
  if (button) button.disabled = true;
  try {
    // wx.login: the simulator plays WeChat, minting a user of this mini program and a one-time
    // code; the login names the mini program, as the WeChat client's Referer would.
    const user = (await call('POST', '/sim/users', { body: appid ? { appid } : {} })).body;
    logNote(`wx.login → code ${user.code}`);
    const answer = (await call('POST', '/api/login', { body: appid ? { code: user.code, appid } : { code: user.code } })).body;
    session = { token: answer.token, openid: user.openid, appid };
    save(SESSION_KEY, session);
    showUser();
    toast(t('emu.logged_in'));
    open('shop', {}, { reset: true });
  } catch (err) {
    await modal(t('emu.login_failed'), err.message);
  } finally {
    if (button) button.disabled = false;
  }
}

// ---------------------------------------------------------------- catalog and cart

async function loadProducts() {
  products = (await call('GET', '/api/products')).body.products;
  // A product that left the catalog leaves the cart too.
  for (const sku of Object.keys(cart)) {
    if (!products.some((p) => p.sku === sku)) delete cart[sku];
  }
  save(CART_KEY, cart);
  updateCartCount();
}

function setQuantity(sku, quantity) {
  if (quantity <= 0) delete cart[sku];
  else cart[sku] = Math.min(quantity, 99);
  save(CART_KEY, cart);
  updateCartCount();
}

function cartLines() {
  return Object.entries(cart)
    .map(([sku, quantity]) => {
      const p = products.find((x) => x.sku === sku);
      return p ? { sku, quantity, price_fen: p.price_fen, name: p.name } : null;
    })
    .filter(Boolean);
}

function stepper(sku, onChange) {
  const quantity = cart[sku] || 0;
  return h('div', { class: 'stepper', dataset: { sku } },
    h('button', { type: 'button', class: 'minus', 'aria-label': t('emu.less'), disabled: quantity === 0, text: '−', onclick: () => { setQuantity(sku, quantity - 1); onChange(); } }),
    h('span', { class: 'quantity', text: quantity }),
    h('button', { type: 'button', class: 'plus', 'aria-label': t('emu.more'), text: '+', onclick: () => { setQuantity(sku, quantity + 1); onChange(); } }));
}

function cartBar() {
  const lines = cartLines();
  const count = lines.reduce((n, l) => n + l.quantity, 0);
  return h('div', { class: 'cart-bar' },
    h('span', { class: 'cart-total', id: 'cart-total', text: t('emu.cart_total', { n: count, amount: money(totalFen(lines)) }) }),
    h('button', { type: 'button', class: 'wx-primary small', id: 'checkout', disabled: count === 0, text: t('emu.checkout'), onclick: () => open('cart') }));
}

async function shopPage(_params, seq) {
  replace(screen, h('p', { class: 'loading', text: t('loading') }));
  await loadProducts();
  if (seq !== renderSeq) return;
  const draw = () => {
    const list = h('ul', { class: 'products' },
      products.map((p) => h('li', { class: 'product', dataset: { sku: p.sku } },
        h('div', { class: 'product-thumb', 'aria-hidden': 'true', text: [...p.name][0] || '?' }),
        h('div', { class: 'product-info' },
          h('strong', { class: 'product-name', text: p.name }),
          h('small', { class: 'muted', text: p.description }),
          h('span', { class: 'price', text: money(p.price_fen) })),
        stepper(p.sku, draw))));
    replace(screen, list, cartBar());
  };
  draw();
}

async function cartPage(_params, seq) {
  replace(screen, h('p', { class: 'loading', text: t('loading') }));
  await loadProducts();
  if (seq !== renderSeq) return;
  const draw = () => {
    const lines = cartLines();
    if (!lines.length) {
      replace(screen, h('div', { class: 'empty' }, h('p', { class: 'muted', text: t('emu.cart_empty') }),
        h('button', { type: 'button', class: 'wx-default', text: t('emu.go_shop'), onclick: () => open('shop', {}, { reset: true }) })));
      return;
    }
    replace(screen,
      h('ul', { class: 'cart-lines' }, lines.map((l) => h('li', { class: 'cart-line', dataset: { sku: l.sku } },
        h('div', { class: 'product-info' },
          h('strong', { text: l.name }),
          h('span', { class: 'muted', text: `${money(l.price_fen)} × ${l.quantity}` })),
        h('span', { class: 'price', text: money(BigInt(l.price_fen) * BigInt(l.quantity)) }),
        stepper(l.sku, draw)))),
      h('div', { class: 'cart-bar' },
        h('span', { class: 'cart-total', id: 'cart-total', text: t('emu.total', { amount: money(totalFen(lines)) }) }),
        h('button', { type: 'button', class: 'wx-primary small', id: 'pay-button', text: t('emu.pay'), onclick: placeOrder })));
  };
  draw();
}

// ---------------------------------------------------------------- paying

async function placeOrder(event) {
  const button = event.currentTarget;
  const lines = cartLines();
  if (!lines.length) return;
  button.disabled = true;
  let order;
  try {
    order = (await call('POST', '/api/orders', {
      auth: true,
      body: { items: lines.map((l) => ({ sku: l.sku, quantity: l.quantity })) },
    })).body;
  } catch (err) {
    button.disabled = false;
    await modal(t('emu.order_failed'), err.message);
    return;
  }
  // The order exists now: the cart is done with, paid or not.
  cart = {};
  save(CART_KEY, cart);
  updateCartCount();
  await pay(order, order.payment);
}

/** Shows the cashier; resolves to true on "confirm", false on "cancel". */
function cashier(order) {
  const sheet = document.getElementById('cashier');
  const mchid = currentMchid();
  document.getElementById('cashier-merchant').textContent = t('emu.cashier.merchant', { mchid });
  document.getElementById('cashier-amount').textContent = money(order.amount_fen);
  document.getElementById('cashier-description').textContent = order.description || '';
  sheet.hidden = false;
  return new Promise((resolve) => {
    const confirm = document.getElementById('cashier-confirm');
    const cancel = document.getElementById('cashier-cancel');
    const done = (answer) => () => {
      sheet.hidden = true;
      confirm.removeEventListener('click', onConfirm);
      cancel.removeEventListener('click', onCancel);
      resolve(answer);
    };
    const onConfirm = done(true);
    const onCancel = done(false);
    confirm.addEventListener('click', onConfirm);
    cancel.addEventListener('click', onCancel);
    confirm.focus();
  });
}

/** Changes one character of the signature, as a man in the middle (or a buggy client) would. */
function tamper(paySign) {
  const i = Math.min(10, paySign.length - 1);
  const swapped = paySign[i] === 'A' ? 'B' : 'A';
  return paySign.slice(0, i) + swapped + paySign.slice(i + 1);
}

/**
 * wx.requestPayment as the WeChat client runs it: the object goes to WeChat (the simulator's
 * /sim/pay), which checks paySign against the merchant's key. Resolves to {ok, errMsg, state}.
 */
async function requestPayment(payment) {
  const body = { ...payment, openid: session.openid };
  if (tamperSwitch.checked) body.paySign = tamper(payment.paySign);
  if (payErrorSwitch.checked) body.result = 'PAYERROR';
  try {
    const answer = (await call('POST', '/sim/pay', { body })).body;
    return { ok: answer.errMsg === 'requestPayment:ok', errMsg: answer.errMsg, state: answer.trade_state };
  } catch (err) {
    return { ok: false, errMsg: (err.body && err.body.errMsg) || err.message, state: null };
  }
}

async function pay(order, payment) {
  devPayment.textContent = JSON.stringify(payment, null, 2);
  const confirmed = await cashier(order);
  if (!confirmed) {
    logNote('wx.requestPayment → requestPayment:fail cancel');
    toast(t('emu.cancelled'));
    open('order', { no: order.out_trade_no, poll: false });
    return;
  }
  const result = await requestPayment(payment);
  logNote(`wx.requestPayment → ${result.errMsg}`);
  if (result.ok) {
    toast(t('emu.paid_toast'));
    open('order', { no: order.out_trade_no, poll: true });
    return;
  }
  await modal(t('emu.pay_failed'), result.errMsg);
  // A bank failure is a result the server learns (by query); a refused signature leaves the
  // order unpaid and payable.
  open('order', { no: order.out_trade_no, poll: result.state === 'PAYERROR' });
}

// ---------------------------------------------------------------- orders

async function ordersPage(_params, seq) {
  replace(screen, h('p', { class: 'loading', text: t('loading') }));
  const orders = (await call('GET', '/api/orders?limit=50', { auth: true })).body.orders;
  if (seq !== renderSeq) return;
  if (!orders.length) {
    replace(screen, transfersLink(), h('div', { class: 'empty' }, h('p', { class: 'muted', text: t('emu.no_orders') })));
    return;
  }
  replace(screen, transfersLink(), h('ul', { class: 'order-list', id: 'my-orders' }, orders.map((o) =>
    h('li', { class: 'order-card', dataset: { order: o.out_trade_no, status: o.status }, tabindex: '0', onclick: () => open('order', { no: o.out_trade_no }) },
      h('div', { class: 'order-card-head' }, h('span', { class: 'mono small', text: o.out_trade_no }), orderStatusBadge(o)),
      h('p', { text: o.description }),
      h('div', { class: 'order-card-foot' }, h('small', { class: 'muted', text: dateTime(o.created_at) }), h('strong', { text: money(o.amount_fen) }))))));
}

const STATUS_MARK = { SUCCESS: '✓', REFUND: '↺', CLOSED: '✕', PAYERROR: '!', NOTPAY: '…' };

async function orderPage({ no, poll, receipt }, seq) {
  replace(screen, h('p', { class: 'loading', text: t('loading') }));
  const started = Date.now();
  for (;;) {
    const order = (await call('GET', `/api/orders/${encodeURIComponent(no)}`, { auth: true })).body;
    if (seq !== renderSeq) return;
    const waiting = poll && order.status === 'NOTPAY';
    const timedOut = waiting && Date.now() - started > POLL_LIMIT_MS;
    drawOrder(order, waiting && !timedOut, timedOut);
    // After a confirmed receipt, a few more looks until the server learns of it (by WeChat's push).
    const awaitingReceipt = receipt && order.shipping_state === 'shipped' && Date.now() - started < RECEIPT_POLL_LIMIT_MS;
    if ((!waiting || timedOut) && !awaitingReceipt) return;
    await sleep(POLL_MS);
    if (seq !== renderSeq) return;
  }
}

/**
 * WeChat's confirm-receipt component (wx.openBusinessView businessType weappOrderConfirm): the
 * buyer says the goods arrived; WeChat (the simulator, POST /sim/orders/{no}/confirm-receipt)
 * records it, settles and tells the merchant server through message push.
 */
async function confirmReceipt(order, button) {
  button.disabled = true;
  try {
    await call('POST', `/sim/orders/${encodeURIComponent(order.out_trade_no)}/confirm-receipt`);
  } catch (err) {
    await modal(t('emu.receipt_failed'), err.message);
    button.disabled = false;
    return;
  }
  logNote(`confirm receipt → ${order.out_trade_no}`);
  confirmed.add(order.out_trade_no);
  save(CONFIRMED_KEY, [...confirmed]);
  toast(t('emu.receipt_confirmed'));
  stack[stack.length - 1] = { name: 'order', params: { no: order.out_trade_no, receipt: true } };
  show();
}

function shippingStateText(state) {
  return SHIPPING_STATES.includes(state) ? t(`shipping_state.${state}`) : state;
}

function drawOrder(order, waiting, timedOut) {
  const actions = [];
  if (order.status === 'NOTPAY' && !waiting) {
    actions.push(h('button', { type: 'button', class: 'wx-primary', id: 'continue-pay', text: t('emu.continue_pay'), onclick: async (e) => {
      e.currentTarget.disabled = true;
      try {
        const fresh = (await call('POST', `/api/orders/${encodeURIComponent(order.out_trade_no)}/payment`, { auth: true })).body;
        await pay(fresh, fresh.payment);
      } catch (err) {
        await modal(t('emu.pay_failed'), err.message);
        show();
      }
    } }));
    actions.push(h('button', { type: 'button', class: 'wx-default', id: 'close-order', text: t('emu.close_order'), onclick: async (e) => {
      e.currentTarget.disabled = true;
      try {
        await call('POST', `/api/orders/${encodeURIComponent(order.out_trade_no)}/close`, { auth: true });
        toast(t('emu.closed'));
      } catch (err) {
        await modal(t('emu.close_failed'), err.message);
      }
      show();
    } }));
  }
  if (timedOut) {
    actions.push(h('button', { type: 'button', class: 'wx-default', text: t('emu.check_again'), onclick: show }));
  }
  let receiptNote = null;
  if (order.shipping_state === 'shipped') {
    if (confirmed.has(order.out_trade_no)) {
      // WeChat has the receipt; the merchant server learns it only through message push.
      receiptNote = h('p', { class: 'muted small', id: 'receipt-note', text: t('emu.receipt_waiting') });
      actions.push(h('button', { type: 'button', class: 'wx-default', id: 'receipt-refresh', text: t('emu.check_again'), onclick: show }));
    } else {
      actions.push(h('button', { type: 'button', class: 'wx-primary', id: 'confirm-receipt', text: t('emu.confirm_receipt'), onclick: (e) => confirmReceipt(order, e.currentTarget) }));
    }
  }
  replace(screen, h('div', { class: `order-page status-${order.status.toLowerCase()}`, id: 'order-page', dataset: { order: order.out_trade_no, status: order.status } },
    h('div', { class: 'order-result' },
      h('div', { class: 'result-mark', 'aria-hidden': 'true', text: waiting ? '' : STATUS_MARK[order.status] || '?' }),
      h('p', { class: 'result-text', id: 'order-status-text', text: waiting ? t('emu.waiting') : t(`emu.status.${orderStatusKey(order)}`) }),
      waiting ? h('div', { class: 'spinner', 'aria-hidden': 'true' }) : null,
      h('p', { class: 'result-amount', text: money(order.amount_fen) })),
    h('dl', { class: 'order-fields' },
      h('dt', { text: t('order.status') }), h('dd', {}, orderStatusBadge(order)),
      h('dt', { text: t('order.no') }), h('dd', { class: 'mono small', text: order.out_trade_no }),
      order.transaction_id ? [h('dt', { text: t('order.transaction_id') }), h('dd', { class: 'mono small', text: order.transaction_id })] : null,
      h('dt', { text: t('order.created') }), h('dd', { text: dateTime(order.created_at) }),
      order.paid_at ? [h('dt', { text: t('order.paid') }), h('dd', { text: dateTime(order.paid_at) })] : null,
      order.refunded_fen ? [h('dt', { text: t('order.refunded') }), h('dd', { text: money(order.refunded_fen) })] : null,
      order.delivery && order.shipping_state ? [h('dt', { text: t('shipping.delivery') }), h('dd', { id: 'order-delivery', dataset: { delivery: order.delivery }, text: DELIVERIES.includes(order.delivery) ? t(`delivery_kind.${order.delivery}`) : order.delivery })] : null,
      order.shipping_state ? [h('dt', { text: t('shipping.state') }), h('dd', {}, h('span', { class: `badge shipping-${order.shipping_state}`, id: 'order-shipping-state', dataset: { shippingState: order.shipping_state }, text: shippingStateText(order.shipping_state) }))] : null),
    h('ul', { class: 'cart-lines' }, (order.items || []).map((i) => h('li', { class: 'cart-line' },
      h('span', { text: `${i.name} × ${i.quantity}` }),
      h('span', { class: 'price', text: money(BigInt(i.unit_price_fen) * BigInt(i.quantity)) })))),
    receiptNote,
    h('div', { class: 'actions' }, actions)));
}

// ---------------------------------------------------------------- transfers (待收款)

/** The orders page's way to the user's transfers. */
function transfersLink() {
  return h('div', { class: 'transfers-link', id: 'orders-transfers', role: 'link', tabindex: '0', onclick: () => open('transfers') },
    h('span', { text: t('emu.transfers') }), h('span', { class: 'muted', 'aria-hidden': 'true', text: '›' }));
}

function transferState(status) {
  const cls = status === 'SUCCESS' ? 'badge-success'
    : status === 'FAIL' ? 'badge-bad'
      : status === 'CANCELLED' || status === 'CANCELING' ? 'badge-closed'
        : status === 'WAIT_USER_CONFIRM' ? 'badge-notpay'
          : 'badge-processing';
  return h('span', { class: `badge ${cls}`, dataset: { status }, text: TRANSFER_STATES.includes(status) ? t(`emu.transfer_state.${status}`) : status });
}

/**
 * The user's transfers, waiting ones first. With `watch`, the one just confirmed is asked about
 * again until its state is final: WeChat's "ok" only says its page was shown.
 */
async function transfersPage({ watch } = {}, seq) {
  replace(screen, h('p', { class: 'loading', text: t('loading') }));
  const started = Date.now();
  for (;;) {
    const transfers = (await call('GET', '/api/transfers', { auth: true })).body.transfers;
    if (seq !== renderSeq) return;
    const watched = watch ? transfers.find((x) => x.out_bill_no === watch) : null;
    const waiting = Boolean(watched) && !TRANSFER_FINAL.includes(watched.status);
    const timedOut = waiting && Date.now() - started > POLL_LIMIT_MS;
    drawTransfers(transfers, waiting && !timedOut ? watch : '', timedOut);
    if (!waiting || timedOut) return;
    await sleep(POLL_MS);
    if (seq !== renderSeq) return;
  }
}

function drawTransfers(transfers, watching, timedOut) {
  if (!transfers.length) {
    replace(screen, h('div', { class: 'empty', id: 'no-transfers' }, h('p', { class: 'muted', text: t('emu.no_transfers') })));
    return;
  }
  replace(screen,
    timedOut ? h('p', { class: 'muted small', id: 'transfer-timed-out', text: t('emu.transfer.still_waiting') }) : null,
    h('ul', { class: 'order-list', id: 'my-transfers' }, transfers.map((x) =>
      h('li', { class: 'order-card transfer-card', dataset: { transfer: x.out_bill_no, status: x.status } },
        h('div', { class: 'order-card-head' }, h('span', { class: 'mono small', text: x.out_bill_no }), transferState(x.status)),
        h('p', { class: 'transfer-remark', text: x.remark }),
        h('div', { class: 'order-card-foot' },
          h('small', { class: 'muted', text: dateTime(x.finished_at || x.created_at) }),
          h('strong', { class: 'transfer-amount', text: money(x.amount_fen) })),
        x.out_bill_no === watching ? [h('p', { class: 'muted small', text: t('emu.transfer.waiting') }), h('div', { class: 'spinner', 'aria-hidden': 'true' })] : null,
        x.can_confirm && x.out_bill_no !== watching
          ? h('button', { type: 'button', class: 'wx-primary small receive', text: t('emu.transfer.receive'), onclick: (e) => receiveTransfer(x, e.currentTarget) })
          : null))));
}

/** WeChat's 确认收款 sheet; resolves to true on "收款", false on "取消". */
function transferSheet(transfer, object) {
  const phone = document.getElementById('phone');
  return new Promise((resolve) => {
    let backdrop = null;
    const done = (answer) => () => {
      backdrop.remove();
      resolve(answer);
    };
    const receive = h('button', { type: 'button', class: 'wx-primary', id: 'transfer-receive', text: t('emu.transfer.receive'), onclick: done(true) });
    backdrop = h('div', { class: 'sheet-backdrop', id: 'transfer-sheet' },
      h('div', { class: 'cashier-sheet transfer-sheet', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'transfer-sheet-title' },
        h('div', { class: 'cashier-head' }, h('span', { id: 'transfer-sheet-title', text: t('emu.transfer.title') })),
        h('p', { class: 'cashier-merchant', id: 'transfer-merchant', text: t('emu.transfer.merchant', { mchid: object.mchId }) }),
        h('p', { class: 'cashier-amount', id: 'transfer-amount', text: money(transfer.amount_fen) }),
        h('p', { class: 'cashier-description', id: 'transfer-remark', text: transfer.remark }),
        h('dl', { class: 'cashier-method' }, h('dt', { text: t('emu.transfer.method') }), h('dd', { text: t('emu.cashier.balance') })),
        receive,
        h('button', { type: 'button', class: 'wx-default', id: 'transfer-decline', text: t('emu.transfer.cancel'), onclick: done(false) })));
    phone.append(backdrop);
    receive.focus();
  });
}

/**
 * wx.requestMerchantTransfer as the WeChat client runs it: its object goes to WeChat (the
 * simulator), which checks the package, the merchant, the mini program and that this user is the
 * payee. Resolves to {ok, cancelled, errMsg}.
 */
async function requestMerchantTransfer(object, receive) {
  const body = { ...object, openid: session.openid };
  if (!receive) body.result = 'CANCEL';
  try {
    const answer = (await call('POST', '/sim/transfers/confirm', { body })).body;
    return { ok: answer.errMsg === 'requestMerchantTransfer:ok', cancelled: answer.errMsg === 'requestMerchantTransfer:fail cancel', errMsg: answer.errMsg };
  } catch (err) {
    return { ok: false, cancelled: false, errMsg: (err.body && err.body.errMsg) || err.message };
  }
}

async function receiveTransfer(transfer, button) {
  button.disabled = true;
  let object;
  try {
    object = (await call('POST', `/api/transfers/${encodeURIComponent(transfer.out_bill_no)}/confirm`, { auth: true })).body;
  } catch (err) {
    await modal(t('emu.transfer.failed'), err.message);
    show();
    return;
  }
  const receive = await transferSheet(transfer, object);
  const result = await requestMerchantTransfer(object, receive);
  logNote(`wx.requestMerchantTransfer → ${result.errMsg}`);
  if (result.cancelled) {
    toast(t('emu.transfer.cancelled'));
    show();
    return;
  }
  if (!result.ok) {
    await modal(t('emu.transfer.failed'), String(result.errMsg || '').replace(/^requestMerchantTransfer:fail\s*/, ''));
    show();
    return;
  }
  toast(t('emu.transfer.confirmed'));
  stack[stack.length - 1] = { name: 'transfers', params: { watch: transfer.out_bill_no } };
  show();
}

// ---------------------------------------------------------------- me

function mePage() {
  replace(screen, h('div', { class: 'me-page' },
    h('div', { class: 'avatar', 'aria-hidden': 'true', text: 'U' }),
    h('p', { class: 'muted', text: 'openid' }),
    h('p', { class: 'mono small', id: 'me-openid', text: session ? session.openid : '' }),
    h('button', { type: 'button', class: 'wx-primary', id: 'open-transfers', text: t('emu.transfers'), onclick: () => open('transfers') }),
    h('button', { type: 'button', class: 'wx-default', id: 'switch-user', text: t('emu.new_user'), onclick: login }),
    h('button', { type: 'button', class: 'wx-default', id: 'logout', text: t('emu.logout'), onclick: () => {
      session = null;
      save(SESSION_KEY, null);
      showUser();
      open('login', {}, { reset: true });
    } })));
}

// ---------------------------------------------------------------- start

async function start() {
  translatePage();
  bindLanguageSwitch(document.getElementById('lang'), () => {
    showApps();
    show();
  });
  navBack.addEventListener('click', back);
  for (const button of tabBar.querySelectorAll('button[data-tab]')) {
    button.addEventListener('click', () => open(button.dataset.tab, {}, { reset: true }));
  }
  tickClock();
  setInterval(tickClock, 30_000);
  showUser();
  updateCartCount();
  try {
    merchant = (await request('GET', '/sim/cashier')).body;
  } catch {
    // The cashier then names no merchant number; paying still works.
  }
  try {
    apps = (await request('GET', '/sim/apps')).body.apps;
  } catch {
    // An older server: the phone runs the simulator's first mini program, unnamed.
  }
  if (!apps.some((a) => a.appid === appid)) {
    appid = merchant && apps.some((a) => a.appid === merchant.appid) ? merchant.appid : apps.length ? apps[0].appid : null;
    save(APP_KEY, appid);
  }
  showApps();
  appSelect.addEventListener('change', () => chooseApp(appSelect.value));
  if (session && session.appid !== appid) {
    session = null;
    save(SESSION_KEY, null);
    showUser();
  }
  open(session ? 'shop' : 'login', {}, { reset: true });
}

start();
