// @ts-check
// The client of `wxpay serve` for a mini program. One file with no dependency, to lift into any
// mini program: login, a request wrapper, orders and payment, and the merchant's transfers to the
// user (商家转账: listed, then confirmed in WeChat's 确认收款 page by wx.requestMerchantTransfer).
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
 * @property {number[]} [transferDelaysMs] the waits between the checks that follow a transfer the
 *   user confirmed (the first check is immediate), at most 9: ten looks in all
 * @property {WeChat} [wechat] where login codes, payments and transfer confirmations come from:
 *   WeChat itself (`wx.login`, `wx.requestPayment`, `wx.requestMerchantTransfer`) unless
 *   replaced, as the sandbox does in DevTools
 * @property {string} [appid] this mini program's appid, sent with the login (a server may serve
 *   several); default: the runtime's (`wx.getAccountInfoSync`), none in DevTools' tourist mode
 */

/**
 * @typedef {{ ok: true } | { ok: false, cancelled: boolean, errMsg: string }} PaymentOutcome
 * @typedef {object} WeChat
 * @property {() => Promise<string>} login a fresh login code
 * @property {(payment: Payment) => Promise<PaymentOutcome>} requestPayment the cashier; always resolves
 * @property {(object: TransferConfirmation) => Promise<PaymentOutcome>} requestMerchantTransfer
 *   WeChat's 确认收款 page; always resolves (`ok`: the page was shown and the user tapped 收款,
 *   not that money arrived)
 */

/**
 * A merchant transfer to the user, as the server shows it. `status` is WeChat's: ACCEPTED,
 * PROCESSING, WAIT_USER_CONFIRM, TRANSFERING, SUCCESS, FAIL, CANCELING or CANCELLED.
 * @typedef {object} Transfer
 * @property {string} out_bill_no
 * @property {number} amount_fen
 * @property {string} remark what the merchant wrote
 * @property {string} status
 * @property {boolean} can_confirm it waits for the user: `receive` it
 * @property {number} created_at Unix milliseconds
 * @property {number | null} finished_at Unix milliseconds, once final
 */

/**
 * The object for wx.requestMerchantTransfer, exactly as the server answered it. Its `package` is
 * the user's key to WeChat's page: passed on, never shown or logged.
 * @typedef {object} TransferConfirmation
 * @property {string} mchId
 * @property {string} appId
 * @property {string} package
 * @property {string} [openId]
 */

/**
 * What came of confirming a transfer, followed with the server.
 * - `received`: the server knows it succeeded (the money is in the user's balance);
 * - `cancelled`: the user closed WeChat's page; the transfer still waits and can be received;
 * - `failed`: WeChat refused (`errMsg`, in WeChat's words) or the transfer failed (`transfer.status` FAIL);
 * - `confirming`: WeChat took the confirmation, but the server had no final state when the
 *   checks ran out (look again later).
 * @typedef {object} ReceiveResult
 * @property {'received' | 'cancelled' | 'failed' | 'confirming'} status
 * @property {Transfer | undefined} transfer the transfer as last seen
 * @property {string} [errMsg] WeChat's message, for `failed`
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

/** The final states of a transfer. */
const TRANSFER_FINAL = ['SUCCESS', 'FAIL', 'CANCELLED'];

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
 * wx.requestMerchantTransfer (base library 3.3.0; no Promise form) as a promise that always
 * resolves: `success` means WeChat's page was shown and the user tapped 收款, not that money moved.
 * @param {TransferConfirmation} object
 * @returns {Promise<PaymentOutcome>}
 */
function wxRequestMerchantTransfer(object) {
  return new Promise((resolve) => {
    if (typeof wx.requestMerchantTransfer !== 'function') {
      resolve({ ok: false, cancelled: false, errMsg: 'requestMerchantTransfer:fail not supported' });
      return;
    }
    /** @type {PaymentOutcome} */
    let outcome = { ok: false, cancelled: false, errMsg: 'requestMerchantTransfer:fail' };
    /** @type {WechatMiniprogram.RequestMerchantTransferOption} */
    const option = {
      mchId: object.mchId,
      appId: object.appId,
      package: object.package,
      success: () => {
        outcome = { ok: true };
      },
      fail: (err) => {
        const errMsg = (err && err.errMsg) || 'requestMerchantTransfer:fail';
        outcome = { ok: false, cancelled: errMsg === 'requestMerchantTransfer:fail cancel', errMsg };
      },
      complete: () => resolve(outcome),
    };
    // WeChat then checks that the user confirming is the payee.
    if (object.openId) option.openId = object.openId;
    wx.requestMerchantTransfer(option);
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
  const transferDelaysMs = (options.transferDelaysMs || [500, 1000, 1500, 2000, 3000, 3000, 3000, 3000, 3000]).slice(0, 9);
  /** @type {WeChat} */
  const wechat = options.wechat || { login: wxLogin, requestPayment: wxRequestPayment, requestMerchantTransfer: wxRequestMerchantTransfer };
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

  /** @returns {Promise<Transfer[]>} the user's transfers, waiting ones first */
  async function transfers() {
    return (await request('GET', '/api/transfers', { auth: true })).transfers;
  }

  /**
   * The wx.requestMerchantTransfer object of a transfer waiting for the user (409
   * `transfer_state` once it no longer waits).
   * @param {string} no
   * @returns {Promise<TransferConfirmation>}
   */
  function transferConfirmation(no) {
    return request('POST', `/api/transfers/${encodeURIComponent(no)}/confirm`, { auth: true });
  }

  /**
   * The transfer as the server has it now (undefined when not listed, or on a failure).
   * @param {string} no
   * @returns {Promise<Transfer | undefined>}
   */
  async function transferNow(no) {
    try {
      return (await transfers()).find((x) => x.out_bill_no === no);
    } catch (e) {
      return undefined;
    }
  }

  /**
   * Receives a transfer: the server's object goes to wx.requestMerchantTransfer unchanged, then
   * the server is asked until the transfer is final (WeChat tells it by notification), at most
   * ten times. Rejects only when the server gives no object (an ApiError); every other outcome
   * is a ReceiveResult.
   * @param {string} no the transfer's out_bill_no
   * @returns {Promise<ReceiveResult>}
   */
  async function receive(no) {
    const object = await transferConfirmation(no);
    const outcome = await wechat.requestMerchantTransfer(object);
    if (!outcome.ok) {
      const seen = await transferNow(no);
      if (outcome.cancelled) return { status: 'cancelled', transfer: seen };
      return { status: 'failed', transfer: seen, errMsg: outcome.errMsg };
    }
    /** @type {Transfer | undefined} */
    let last;
    for (let i = 0; ; i++) {
      last = (await transferNow(no)) || last;
      if (last && TRANSFER_FINAL.indexOf(last.status) >= 0) break;
      if (i >= transferDelaysMs.length) return { status: 'confirming', transfer: last };
      await wait(transferDelaysMs[i]);
    }
    if (last.status === 'SUCCESS') return { status: 'received', transfer: last };
    return { status: 'failed', transfer: last, errMsg: 'requestMerchantTransfer:fail ' + last.status };
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
    transfers,
    transferConfirmation,
    receive,
  };
}

module.exports = { createClient, ApiError, wxLogin, wxRequestPayment, wxRequestMerchantTransfer };
