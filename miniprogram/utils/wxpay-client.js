// @ts-check
// The client of `wxpay serve` for a mini program. One file with no dependency, to lift into any
// mini program: login, a request wrapper, orders and payment.
//
// The mini program never signs anything and holds no key: the server answers the exact object
// for wx.requestPayment, and WeChat itself checks its paySign. Nor is the success callback of
// wx.requestPayment taken as proof of payment: only the server, told by WeChat's notification or
// its own query, says an order is paid.

/**
 * @typedef {object} ClientOptions
 * @property {string} baseUrl the server's origin, e.g. `https://shop.example.com` (no trailing slash needed)
 * @property {number} [timeoutMs] one request's timeout (default 10 s)
 * @property {string} [storageKey] where the session token is kept (default `wxpay.session`)
 * @property {number[]} [confirmDelaysMs] the waits between the checks that confirm a payment
 *   with the server (the first check is immediate); their sum bounds the confirmation
 * @property {WeChat} [wechat] where login codes and payments come from: WeChat itself
 *   (`wx.login`, `wx.requestPayment`) unless replaced, as the sandbox does in DevTools
 * @property {string} [appid] this mini program's appid, sent with the login (a server may serve
 *   several); default: the runtime's (`wx.getAccountInfoSync`), none in DevTools' tourist mode
 */

/**
 * @typedef {{ ok: true } | { ok: false, cancelled: boolean, errMsg: string }} PaymentOutcome
 * @typedef {object} WeChat
 * @property {() => Promise<string>} login a fresh login code
 * @property {(payment: Payment) => Promise<PaymentOutcome>} requestPayment the cashier; always resolves
 */

/**
 * @typedef {object} Product
 * @property {string} sku
 * @property {string} name
 * @property {string} description
 * @property {number} price_fen
 */

/**
 * @typedef {object} OrderItem
 * @property {string} sku
 * @property {string} name
 * @property {number} quantity
 * @property {number} unit_price_fen
 */

/**
 * The object for wx.requestPayment, exactly as the server signed it.
 * @typedef {object} Payment
 * @property {string} timeStamp
 * @property {string} nonceStr
 * @property {string} package
 * @property {'RSA' | 'MD5' | 'HMAC-SHA256'} signType
 * @property {string} paySign
 */

/**
 * An order as the server answers it. `status`: NOTPAY, SUCCESS, REFUND, CLOSED or PAYERROR.
 * @typedef {object} Order
 * @property {string} out_trade_no
 * @property {number} amount_fen
 * @property {string} status
 * @property {string} description
 * @property {OrderItem[]} items
 * @property {string | null} transaction_id
 * @property {number | null} paid_at Unix milliseconds
 * @property {number} refunded_fen
 * @property {number} expires_at Unix milliseconds
 * @property {number} created_at Unix milliseconds
 * @property {Delivery} [delivery] how it is delivered (fixed when the order is made)
 * @property {ShippingState | null} [shipping_state] null until paid
 * @property {Payment} [payment] present when the order was just created or re-prepared
 * @property {Refund[]} [refunds] the order's refunds, oldest first (`order(no)` only)
 */

/**
 * How an order is delivered.
 * @typedef {'express' | 'same_city' | 'virtual' | 'pickup'} Delivery
 */

/**
 * Where a paid order's delivery is: WeChat holds the money of a managed mini program's payment
 * until the goods are shipped and the buyer confirms receipt (received), then settles.
 * @typedef {'awaiting_shipment' | 'partially_shipped' | 'shipped' | 'received' | 'settled'} ShippingState
 */

/**
 * A refund of an order, as the server shows it to the buyer.
 * @typedef {object} Refund
 * @property {string} out_refund_no
 * @property {number} amount_fen
 * @property {'PROCESSING' | 'SUCCESS' | 'CLOSED' | 'ABNORMAL'} status
 * @property {string | null} reason the merchant's reason, if given
 * @property {number} created_at Unix milliseconds
 * @property {number | null} succeeded_at Unix milliseconds, once the money is back
 */

/**
 * What came of a payment, confirmed with the server.
 * - `paid`: the server knows the order is paid;
 * - `cancelled`: the user closed WeChat's cashier; the order is unpaid and can be paid again;
 * - `failed`: WeChat refused or failed the payment (`errMsg` says why, in WeChat's words);
 * - `confirming`: WeChat said ok but the server did not know yet when the confirmation budget
 *   ran out (check again later with `confirm`).
 * @typedef {object} PayResult
 * @property {'paid' | 'cancelled' | 'failed' | 'confirming'} status
 * @property {Order} order the order as last seen
 * @property {string} [errMsg] WeChat's message, for `failed`
 */

/** An error of the server's API (`{"code","message"}`), of the network, or of WeChat's login. */
class ApiError extends Error {
  /**
   * @param {string} code the server's code (`unauthorized`, `order_expired`, …) or `network`,
   *   `timeout`, `bad_response`, `login_failed`
   * @param {string} message
   * @param {number} status the HTTP status, 0 when no answer came
   */
  constructor(code, message, status) {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.status = status;
  }
}

/** The statuses after which an order no longer changes by itself. */
const SETTLED = ['SUCCESS', 'REFUND', 'CLOSED', 'PAYERROR'];

/** @param {number} ms */
function wait(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** @param {string} no */
function orderPath(no) {
  return `/api/orders/${encodeURIComponent(no)}`;
}

/**
 * wx.login as a promise of its code.
 * @returns {Promise<string>}
 */
function wxLogin() {
  return new Promise((resolve, reject) => {
    wx.login({
      success: (res) => {
        if (res.code) resolve(res.code);
        else reject(new ApiError('login_failed', res.errMsg || 'wx.login gave no code', 0));
      },
      fail: (err) => reject(new ApiError('login_failed', (err && err.errMsg) || 'wx.login failed', 0)),
    });
  });
}

/**
 * wx.requestPayment as a promise that always resolves.
 * @param {Payment} payment
 * @returns {Promise<PaymentOutcome>}
 */
function wxRequestPayment(payment) {
  return new Promise((resolve) => {
    wx.requestPayment({
      timeStamp: payment.timeStamp,
      nonceStr: payment.nonceStr,
      package: payment.package,
      signType: payment.signType,
      paySign: payment.paySign,
      success: () => resolve({ ok: true }),
      fail: (err) => {
        const errMsg = (err && err.errMsg) || 'requestPayment:fail';
        resolve({ ok: false, cancelled: errMsg === 'requestPayment:fail cancel', errMsg });
      },
    });
  });
}

/**
 * Makes a client.
 * @param {ClientOptions} options
 */
function createClient(options) {
  const baseUrl = options.baseUrl.replace(/\/+$/, '');
  const timeoutMs = options.timeoutMs || 10000;
  const storageKey = options.storageKey || 'wxpay.session';
  const confirmDelaysMs = options.confirmDelaysMs || [500, 1000, 1500, 2000, 3000, 3000, 3000];
  /** @type {WeChat} */
  const wechat = options.wechat || { login: wxLogin, requestPayment: wxRequestPayment };
  /** @type {Promise<string> | null} the login under way, shared by every caller */
  let loggingIn = null;

  /** @returns {string} */
  function storedToken() {
    try {
      const saved = wx.getStorageSync(storageKey);
      return saved && typeof saved.token === 'string' ? saved.token : '';
    } catch (e) {
      return '';
    }
  }

  /**
   * One HTTP exchange. Resolves with any HTTP answer; rejects only when none came.
   * @param {'GET' | 'POST'} method
   * @param {string} path
   * @param {object | undefined} data
   * @param {string} token
   * @returns {Promise<{ statusCode: number, data: any }>}
   */
  function send(method, path, data, token) {
    /** @type {Record<string, string>} */
    const header = { 'content-type': 'application/json' };
    if (token) header.Authorization = `Bearer ${token}`;
    return new Promise((resolve, reject) => {
      wx.request({
        url: baseUrl + path,
        method,
        data: method === 'POST' ? data || {} : data,
        header,
        timeout: timeoutMs,
        dataType: 'json',
        success: (res) => resolve({ statusCode: res.statusCode, data: res.data }),
        fail: (err) => {
          const errMsg = (err && err.errMsg) || 'request:fail';
          if (/timeout/i.test(errMsg)) reject(new ApiError('timeout', errMsg, 0));
          else reject(new ApiError('network', errMsg, 0));
        },
      });
    });
  }

  /**
   * The answer's body, or the server's error as an ApiError.
   * @param {{ statusCode: number, data: any }} res
   */
  function unwrap(res) {
    const body = res.data;
    if (res.statusCode >= 200 && res.statusCode < 300) {
      if (body && typeof body === 'object') return body;
      throw new ApiError('bad_response', 'the server answered something that is not JSON', res.statusCode);
    }
    if (body && typeof body === 'object' && typeof body.code === 'string') {
      throw new ApiError(body.code, String(body.message || body.code), res.statusCode);
    }
    throw new ApiError('http_' + res.statusCode, `HTTP ${res.statusCode}`, res.statusCode);
  }

  /** This mini program's appid (`options.appid`, else the runtime's), or '' when unknown. */
  function ownAppId() {
    if (options.appid) return options.appid;
    try {
      const appId = wx.getAccountInfoSync().miniProgram.appId;
      return appId && appId !== 'touristappid' ? appId : '';
    } catch (_) {
      return '';
    }
  }

  /** wx.login, then `POST /api/login`; keeps the token. @returns {Promise<string>} */
  async function doLogin() {
    /** @type {string} */
    let code;
    try {
      code = await wechat.login();
    } catch (err) {
      throw err instanceof ApiError ? err : new ApiError('login_failed', String(err && /** @type {Error} */ (err).message), 0);
    }
    // The server may serve several mini programs: say which one this is (it could also tell
    // from the Referer WeChat sends). DevTools without an appid says `touristappid`: none.
    /** @type {{code: string, appid?: string}} */
    const body = { code };
    const appid = ownAppId();
    if (appid) body.appid = appid;
    const answer = unwrap(await send('POST', '/api/login', body, ''));
    if (typeof answer.token !== 'string' || !answer.token) {
      throw new ApiError('bad_response', 'the login answer has no token', 200);
    }
    wx.setStorageSync(storageKey, { token: answer.token });
    return answer.token;
  }

  /**
   * Logs in, or joins the login already under way: never two at once.
   * @returns {Promise<string>} the new token
   */
  function login() {
    if (!loggingIn) {
      loggingIn = doLogin().finally(() => {
        loggingIn = null;
      });
    }
    return loggingIn;
  }

  /** Whether a session token is stored (it may have expired: the server says). */
  function hasSession() {
    return storedToken() !== '';
  }

  /**
   * Logs out: the server revokes the session (`POST /api/logout`; every instance refuses the
   * token from then on) and the stored token is forgotten. It is forgotten first, and even when
   * the server cannot be reached (the token then ends when it expires).
   * @returns {Promise<void>}
   */
  async function logout() {
    const token = storedToken();
    wx.removeStorageSync(storageKey);
    if (!token) return;
    try {
      await send('POST', '/api/logout', undefined, token);
    } catch {
      // Unreachable: the session expires on its own; nothing is stored any more.
    }
  }

  /**
   * A call of the server's API. With `auth`, logs in first when there is no session, and once
   * more, silently, when the server answers 401 (the session expired); the request is then
   * sent again once.
   * @param {'GET' | 'POST'} method
   * @param {string} path
   * @param {{ data?: object, auth?: boolean }} [opts]
   * @returns {Promise<any>}
   */
  async function request(method, path, opts = {}) {
    if (!opts.auth) return unwrap(await send(method, path, opts.data, ''));
    let token = storedToken();
    if (!token) token = await login();
    let res = await send(method, path, opts.data, token);
    if (res.statusCode === 401) {
      // Another request may have logged in again meanwhile: use its token rather than log in twice.
      const current = storedToken();
      token = current && current !== token && !loggingIn ? current : await login();
      res = await send(method, path, opts.data, token);
    }
    return unwrap(res);
  }

  /** @returns {Promise<Product[]>} the active catalogue */
  async function products() {
    return (await request('GET', '/api/products')).products;
  }

  /**
   * Places an order; the server prices it from its catalogue.
   * @param {{ sku: string, quantity: number }[]} items
   * @returns {Promise<Order>} the order, with `payment`
   */
  function createOrder(items) {
    return request('POST', '/api/orders', {
      auth: true,
      data: { items: items.map((i) => ({ sku: i.sku, quantity: i.quantity })) },
    });
  }

  /** @param {number} [limit] @returns {Promise<Order[]>} the user's orders, newest first */
  async function orders(limit) {
    return (await request('GET', `/api/orders?limit=${limit || 20}`, { auth: true })).orders;
  }

  /** @param {string} no @returns {Promise<Order>} */
  function order(no) {
    return request('GET', orderPath(no), { auth: true });
  }

  /**
   * Fresh wx.requestPayment parameters for an unpaid order.
   * @param {string} no
   * @returns {Promise<Order>} the order, with `payment`
   */
  function repay(no) {
    return request('POST', `${orderPath(no)}/payment`, { auth: true });
  }

  /** Closes an unpaid order. @param {string} no @returns {Promise<Order>} */
  function closeOrder(no) {
    return request('POST', `${orderPath(no)}/close`, { auth: true });
  }

  /**
   * Asks the server until the order is settled or the budget of `confirmDelaysMs` is spent.
   * A network failure while confirming is not an answer: the last order seen is kept.
   * @param {string} no
   * @param {Order} [known] the order as known before
   * @returns {Promise<Order | undefined>}
   */
  async function confirm(no, known) {
    let last = known;
    for (let i = 0; ; i++) {
      try {
        last = await order(no);
      } catch (e) {
        // Kept as last seen; the next check may get through.
      }
      if (last && SETTLED.indexOf(last.status) >= 0) return last;
      if (i >= confirmDelaysMs.length) return last;
      await wait(confirmDelaysMs[i]);
    }
  }

  /**
   * Checks the order once (a failure keeps what was known).
   * @param {Order} known
   * @returns {Promise<Order>}
   */
  async function checkOnce(known) {
    try {
      return await order(known.out_trade_no);
    } catch (e) {
      return known;
    }
  }

  /**
   * Pays an order: its `payment` goes to wx.requestPayment unchanged, then the server confirms.
   * Never rejects: every outcome is a PayResult.
   * @param {Order} placed an order with `payment` (from createOrder or repay)
   * @returns {Promise<PayResult>}
   */
  async function pay(placed) {
    if (!placed.payment) throw new Error('pay: the order has no payment parameters (use repay)');
    const outcome = await wechat.requestPayment(placed.payment);
    if (outcome.ok) {
      const seen = (await confirm(placed.out_trade_no, placed)) || placed;
      if (seen.status === 'SUCCESS' || seen.status === 'REFUND') return { status: 'paid', order: seen };
      if (seen.status === 'NOTPAY') return { status: 'confirming', order: seen };
      return { status: 'failed', order: seen, errMsg: 'requestPayment:fail ' + seen.status };
    }
    // Even a refusal is checked once: the payment may have gone through before the error.
    const seen = await checkOnce(placed);
    if (seen.status === 'SUCCESS' || seen.status === 'REFUND') return { status: 'paid', order: seen };
    if (outcome.cancelled) return { status: 'cancelled', order: seen };
    return { status: 'failed', order: seen, errMsg: outcome.errMsg };
  }

  return {
    login,
    hasSession,
    logout,
    request,
    products,
    createOrder,
    orders,
    order,
    repay,
    closeOrder,
    confirm,
    pay,
  };
}

module.exports = { createClient, ApiError, wxLogin, wxRequestPayment };
