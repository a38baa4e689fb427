// The mini program in Node: its pages rendered by miniprogram-simulate (the official WXML
// compiler, exparser, a jsdom document), its routes, and a `wx` that behaves like the WeChat
// client: wx.request over real HTTP, wx.login through the simulator's users (the server's /sim
// proxy), wx.requestPayment posting the object to the simulator's /sim/pay, which checks paySign
// as WeChat does (or the user cancelling, when a test says so), wx.openBusinessView's
// confirm-receipt component confirming at the simulator and answering through App.onShow as
// WeChat does, wx.requestMerchantTransfer's 确认收款 page posting the object and the user's openid
// to the simulator's /sim/transfers/confirm (收款, or 取消 when a test says so), storage that
// outlives a launch.
'use strict';

const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const Module = require('node:module');
const { JSDOM } = require('jsdom');

const ROOT = path.resolve(process.env.MP_ROOT || path.join(__dirname, '..', 'miniprogram'));

// miniprogram-simulate renders into a DOM: jsdom's, made global before it loads.
const dom = new JSDOM('<!doctype html><html><head></head><body></body></html>', { pretendToBeVisual: true });
for (const name of ['window', 'document', 'Element', 'Node', 'HTMLElement', 'Event', 'CustomEvent',
  'MutationObserver', 'getComputedStyle', 'requestAnimationFrame', 'cancelAnimationFrame']) {
  global[name] = name === 'window' ? dom.window : dom.window[name];
}
const simulate = require('miniprogram-simulate');

/** Problems the mini program caused that no assertion looked at: each scenario checks it is empty. */
const problems = [];
process.on('unhandledRejection', (reason) => problems.push(`unhandled rejection: ${reason && reason.stack ? reason.stack : reason}`));
const consoleError = console.error;
console.error = (...args) => {
  problems.push(`console.error: ${args.map(String).join(' ')}`);
  consoleError(...args);
};

/** Calls a wx API's callbacks as the client does: later, success or fail, then complete. */
function answer(options, ok, result) {
  setImmediate(() => {
    if (ok && typeof options.success === 'function') options.success(result);
    if (!ok && typeof options.fail === 'function') options.fail(result);
    if (typeof options.complete === 'function') options.complete(result);
  });
}

/** The harness's own calls (the simulator, the back office): JSON over HTTP. */
async function call(method, url, { body, token, userKey } = {}) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  if (userKey) headers['x-sim-user-key'] = userKey;
  const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // Not JSON: kept as text below.
  }
  return { status: res.status, body: json === null ? text : json };
}

/** Waits until `check()` returns a truthy value (polled), or fails with `what` after `ms`. */
async function until(check, what, ms = 20000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last && last.stack ? last.stack : JSON.stringify(last)})`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** A free TCP port on 127.0.0.1. */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/**
 * A TCP relay in front of the server whose listener can be shut: the server "unreachable"
 * (connection refused) and back, on the same address.
 */
class Relay {
  constructor(target) {
    this.target = new URL(target);
    this.sockets = new Set();
    this.server = null;
  }

  async start() {
    this.port = await freePort();
    this.url = `http://127.0.0.1:${this.port}`;
    return this;
  }

  up() {
    return new Promise((resolve, reject) => {
      this.server = net.createServer((client) => {
        const upstream = net.connect(Number(this.target.port), this.target.hostname);
        for (const s of [client, upstream]) {
          this.sockets.add(s);
          s.on('close', () => this.sockets.delete(s));
          s.on('error', () => {
            client.destroy();
            upstream.destroy();
          });
        }
        client.pipe(upstream).pipe(client);
      });
      this.server.once('error', reject);
      this.server.listen(this.port, '127.0.0.1', () => resolve());
    });
  }

  down() {
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    this.server = null;
    return server ? new Promise((resolve) => server.close(() => resolve())) : Promise.resolve();
  }
}

/** Parses `/pages/x/x?a=1&b=2` into the page path and its query, values left as sent. */
function parseUrl(url) {
  const [pathname, search = ''] = url.split('?');
  const query = {};
  for (const pair of search.split('&').filter(Boolean)) {
    const i = pair.indexOf('=');
    query[i < 0 ? pair : pair.slice(0, i)] = i < 0 ? '' : pair.slice(i + 1);
  }
  return { route: pathname.replace(/^\//, ''), query };
}

/** A WeChat user's phone: storage kept from one launch of the mini program to the next. */
class Phone {
  /**
   * @param {{ wechat: string, adminToken: string }} opts `wechat`: where the simulator is
   *   (the server's /sim proxy), whatever base URL the mini program is given
   */
  constructor({ wechat, adminToken }) {
    this.wechat = wechat;
    this.adminToken = adminToken;
    this.storage = new Map();
    this.openid = null;
    // The WeChat user's own credential at the simulator (POST /sim/users answers it): their
    // later login codes need it, as nobody else may log in as them.
    this.userKey = null;
    // This WeChat user's payments, transaction_id → out_trade_no: WeChat's confirm-receipt
    // component finds the user's own orders only.
    this.transactions = new Map();
  }

  /**
   * Starts the mini program (onLaunch, then its first page) with config.js saying `baseUrl` and
   * `sandbox` (false: this phone's WeChat gives the login codes and runs the cashier).
   */
  async launch({ baseUrl, sandbox = false }) {
    const app = new Launch(this, baseUrl, sandbox);
    await app.start();
    return app;
  }
}

/** One run of the mini program on a phone, from launch to close. */
class Launch {
  constructor(phone, baseUrl, sandbox) {
    this.phone = phone;
    this.baseUrl = baseUrl;
    this.sandbox = sandbox;
    /** Every wx.request: {method, path, status, body, response} (status 0: no answer). */
    this.requests = [];
    /** Every object given to wx.requestPayment, and what came of it. */
    this.payments = [];
    /** What the user does in WeChat's cashier, one entry per wx.requestPayment: confirm, cancel, payerror. */
    this.cashier = [];
    /** Every opening of WeChat's confirm-receipt component: {extraData, choice, status, errormsg, sim}. */
    this.receipts = [];
    /** What the user does in the confirm-receipt component, one entry per opening: confirm (default), cancel. */
    this.receiptChoices = [];
    /** Every object given to wx.requestMerchantTransfer: {object, choice, errMsg, sim}. */
    this.merchantTransfers = [];
    /** What the user does in WeChat's 确认收款 page, one entry per wx.requestMerchantTransfer: confirm (default), cancel. */
    this.transferChoices = [];
    this.toasts = [];
    this.modals = [];
    this.logins = 0;
    /** The page stack, the current page last: {route, query, comp}. */
    this.stack = [];
    this.tabPages = new Map();
    this.componentIds = new Map();
    this.container = document.createElement('div');
    document.body.appendChild(this.container);
  }

  async start() {
    this.installWx();
    this.loadModules();
    const appJson = require(path.join(ROOT, 'app.json'));
    this.tabs = appJson.tabBar.list.map((t) => t.pagePath);
    const opened = { path: appJson.pages[0], query: {}, scene: 1001 };
    if (this.app && typeof this.app.onLaunch === 'function') this.app.onLaunch(opened);
    if (this.app && typeof this.app.onShow === 'function') this.app.onShow(opened);
    await this.open(appJson.pages[0], {}, 'switchTab');
  }

  /** The mini program's modules, fresh for this launch, with config.js giving this launch's base URL. */
  loadModules() {
    for (const key of Object.keys(require.cache)) {
      if (key.startsWith(ROOT + path.sep)) delete require.cache[key];
    }
    const configPath = path.join(ROOT, 'config.js');
    const real = require(configPath);
    const config = new Module(configPath, module);
    config.filename = configPath;
    config.loaded = true;
    config.exports = { ...real, baseUrl: this.baseUrl, sandbox: this.sandbox };
    require.cache[configPath] = config;
    this.app = null;
    global.App = (options) => {
      this.app = options;
    };
    global.getApp = () => this.app;
    global.getCurrentPages = () => this.stack.map((p) => p.comp.instance);
    require(path.join(ROOT, 'app.js'));
    for (const route of require(path.join(ROOT, 'app.json')).pages) {
      this.componentIds.set(route, simulate.load(path.join(ROOT, route), { rootPath: ROOT }));
    }
  }

  /** A module of the mini program as its pages see it in this launch (e.g. `utils/shop`). */
  module(name) {
    return require(path.join(ROOT, name));
  }

  // ------------------------------------------------------------------ pages and routes

  async open(route, query, how) {
    const id = this.componentIds.get(route);
    if (!id) throw new Error(`no page ${route} in app.json`);
    const isTab = this.tabs.includes(route);
    if (how === 'switchTab') {
      if (!isTab) throw new Error(`switchTab to ${route}, which is not a tab`);
      for (const p of this.stack) if (!this.tabs.includes(p.route)) p.comp.detach();
      let page = this.tabPages.get(route);
      const fresh = !page;
      if (fresh) {
        page = { route, query: {}, comp: simulate.render(id) };
        page.comp.attach(this.container);
        this.tabPages.set(route, page);
      }
      this.stack = [page];
      if (fresh) await this.lifecycle(page, 'onLoad', {});
      await this.lifecycle(page, 'onShow');
      return;
    }
    if (isTab) throw new Error(`${how} to the tab ${route}: tabs are opened with switchTab`);
    const page = { route, query, comp: simulate.render(id) };
    page.comp.attach(this.container);
    if (how === 'redirectTo') {
      const gone = this.stack.pop();
      if (gone && !this.tabs.includes(gone.route)) gone.comp.detach();
    }
    if (how === 'reLaunch') this.stack = [];
    this.stack.push(page);
    await this.lifecycle(page, 'onLoad', query);
    await this.lifecycle(page, 'onShow');
  }

  lifecycle(page, name, arg) {
    const fn = page.comp.instance[name];
    // Started, not awaited: the framework does not wait for a page's promises either.
    if (typeof fn === 'function') fn.call(page.comp.instance, arg);
  }

  /** The current page's component (j-component's wrapper: data, dom, querySelector). */
  get page() {
    return this.stack[this.stack.length - 1];
  }

  /** Waits until the current page is `route` and `check(page)` holds. */
  async onPage(route, check = () => true, what = '') {
    await until(() => this.page && this.page.route === route && check(this.page.comp), `${route} ${what}`);
    return this.page.comp;
  }

  /**
   * The rendered text of the current page (or of `selector` in it) as a reader sees it: each
   * piece of text once, pieces apart by one space.
   */
  text(selector) {
    const comp = this.page.comp;
    const node = selector ? comp.querySelector(selector) : comp;
    if (!node) throw new Error(`no ${selector} on ${this.page.route}`);
    const pieces = [];
    const walker = document.createTreeWalker(node.dom, dom.window.NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
      const t = walker.currentNode.textContent.replace(/\s+/g, ' ').trim();
      if (t) pieces.push(t);
    }
    return pieces.join(' ');
  }

  has(selector) {
    return Boolean(this.page.comp.querySelector(selector));
  }

  /** A tap on `selector` of the current page, as the user's finger makes it. */
  tap(selector) {
    const node = this.page.comp.querySelector(selector);
    if (!node) throw new Error(`nothing to tap at ${selector} on ${this.page.route}: ${this.text()}`);
    node.dispatchEvent('tap');
  }

  /** The mini program's requests to the server matching `method path` (path without the query). */
  sent(method, pathPrefix) {
    return this.requests.filter((r) => r.method === method && r.path.split('?')[0] === pathPrefix);
  }

  close() {
    for (const p of this.stack) p.comp.detach();
    for (const p of this.tabPages.values()) p.comp.detach();
    this.container.remove();
  }

  // ------------------------------------------------------------------ the wx object

  installWx() {
    const launch = this;
    const phone = this.phone;
    const storage = phone.storage;
    const route = (how) => (options) => {
      const { route: r, query } = parseUrl(options.url);
      launch.open(r, query, how).then(
        () => answer(options, true, { errMsg: `${how}:ok` }),
        (err) => {
          problems.push(`${how}(${options.url}): ${err.stack}`);
          answer(options, false, { errMsg: `${how}:fail ${err.message}` });
        },
      );
    };
    Object.assign(global.wx, {
      request(options) {
        return launch.request(options);
      },
      login(options) {
        launch.login().then(
          (code) => answer(options, true, { code, errMsg: 'login:ok' }),
          (err) => answer(options, false, { errMsg: `login:fail ${err.message}` }),
        );
      },
      requestPayment(options) {
        launch.requestPayment(options).then(
          (res) => answer(options, res.errMsg === 'requestPayment:ok', res),
          (err) => answer(options, false, { errMsg: `requestPayment:fail ${err.message}` }),
        );
      },
      requestMerchantTransfer(options) {
        launch.requestMerchantTransfer(options).then(
          (res) => answer(options, res.errMsg === 'requestMerchantTransfer:ok', res),
          (err) => answer(options, false, { errMsg: `requestMerchantTransfer:fail ${err.message}` }),
        );
      },
      openBusinessView(options) {
        if (options.businessType !== 'weappOrderConfirm') {
          answer(options, false, { errMsg: `openBusinessView:fail businessType ${options.businessType} is not emulated` });
          return;
        }
        // The component opens (success says only that), the mini program goes to the
        // background; its answer comes when the user leaves the component.
        answer(options, true, { errMsg: 'openBusinessView:ok' });
        launch.confirmReceipt(options.extraData || {}).catch((err) => problems.push(`openBusinessView: ${err.stack}`));
      },
      getAccountInfoSync() {
        return { miniProgram: { appId: 'touristappid', envVersion: 'develop', version: '' } };
      },
      getStorageSync(key) {
        return storage.has(key) ? JSON.parse(storage.get(key)) : '';
      },
      setStorageSync(key, value) {
        storage.set(key, JSON.stringify(value));
      },
      removeStorageSync(key) {
        storage.delete(key);
      },
      navigateTo: route('navigateTo'),
      redirectTo: route('redirectTo'),
      switchTab: route('switchTab'),
      reLaunch: route('reLaunch'),
      navigateBack(options = {}) {
        const delta = options.delta || 1;
        for (let i = 0; i < delta && launch.stack.length > 1; i++) launch.stack.pop().comp.detach();
        launch.lifecycle(launch.page, 'onShow');
        answer(options, true, { errMsg: 'navigateBack:ok' });
      },
      showToast(options) {
        launch.toasts.push(options.title);
        answer(options, true, { errMsg: 'showToast:ok' });
      },
      showModal(options) {
        launch.modals.push({ title: options.title, content: options.content });
        answer(options, true, { errMsg: 'showModal:ok', confirm: true, cancel: false });
      },
      showLoading(options) {
        answer(options, true, { errMsg: 'showLoading:ok' });
      },
      hideLoading(options = {}) {
        answer(options, true, { errMsg: 'hideLoading:ok' });
      },
      stopPullDownRefresh(options = {}) {
        answer(options, true, { errMsg: 'stopPullDownRefresh:ok' });
      },
    });
  }

  /** wx.request: real HTTP, WeChat's answer shapes and errMsg texts. */
  request(options) {
    const method = (options.method || 'GET').toUpperCase();
    const headers = {};
    for (const [k, v] of Object.entries(options.header || {})) headers[k.toLowerCase()] = String(v);
    if (!headers['content-type']) headers['content-type'] = 'application/json';
    let url = options.url;
    let body;
    if (method === 'GET') {
      if (options.data && typeof options.data === 'object') {
        const q = new URLSearchParams(options.data).toString();
        if (q) url += (url.includes('?') ? '&' : '?') + q;
      }
    } else if (options.data !== undefined) {
      body = typeof options.data === 'string' ? options.data : JSON.stringify(options.data);
    }
    const target = new URL(url);
    const entry = { method, path: target.pathname + target.search, status: 0, body: options.data, response: null, token: headers.authorization || '' };
    this.requests.push(entry);
    let finished = false;
    const finish = (ok, result) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      answer(options, ok, result);
    };
    const req = http.request(target, { method, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', (err) => finish(false, { errMsg: `request:fail ${err.message}` }));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let data = text;
        if ((options.dataType || 'json') === 'json') {
          try {
            data = JSON.parse(text);
          } catch {
            // WeChat hands over the text when it is not JSON.
          }
        }
        entry.status = res.statusCode;
        entry.response = data;
        finish(true, { data, statusCode: res.statusCode, header: res.headers, cookies: [], errMsg: 'request:ok' });
      });
    });
    const timer = setTimeout(() => {
      req.destroy();
      finish(false, { errMsg: 'request:fail timeout' });
    }, options.timeout || 60000);
    req.on('error', (err) => {
      const refused = err.code === 'ECONNREFUSED';
      finish(false, {
        errMsg: refused
          ? 'request:fail errcode:-102 cronet_error_code:-102 error_msg:net::ERR_CONNECTION_REFUSED'
          : `request:fail ${err.message}`,
      });
    });
    if (body !== undefined) req.write(body);
    req.end();
    return { abort: () => req.destroy() };
  }

  /** wx.login: a fresh code of this phone's WeChat user, who is made on the first login. */
  async login() {
    const phone = this.phone;
    const res = phone.openid
      ? await call('POST', `${phone.wechat}/sim/users/${encodeURIComponent(phone.openid)}/code`, { userKey: phone.userKey })
      : await call('POST', `${phone.wechat}/sim/users`, { body: {} });
    if (res.status !== 200) throw new Error(`the simulator refused a login code: ${res.status} ${JSON.stringify(res.body)}`);
    phone.openid = res.body.openid;
    if (res.body.user_key) phone.userKey = res.body.user_key;
    this.logins += 1;
    return res.body.code;
  }

  /** wx.requestPayment: WeChat's cashier, then WeChat (the simulator) checking and paying. */
  async requestPayment(options) {
    const payment = {};
    for (const key of ['timeStamp', 'nonceStr', 'package', 'signType', 'paySign']) {
      if (typeof options[key] !== 'string' || !options[key]) {
        return { errMsg: `requestPayment:fail parameter error: parameter.${key} should be String` };
      }
      payment[key] = options[key];
    }
    const choice = this.cashier.length ? this.cashier.shift() : 'confirm';
    const record = { payment, choice, errMsg: '' };
    this.payments.push(record);
    if (choice === 'cancel') {
      record.errMsg = 'requestPayment:fail cancel';
      return { errMsg: record.errMsg };
    }
    const body = { ...payment, openid: this.phone.openid };
    if (choice === 'payerror') body.result = 'PAYERROR';
    const res = await call('POST', `${this.phone.wechat}/sim/pay`, { body });
    record.errMsg = (res.body && res.body.errMsg) || `requestPayment:fail ${res.status}`;
    if (res.body && res.body.transaction_id) this.phone.transactions.set(res.body.transaction_id, res.body.out_trade_no);
    return { errMsg: record.errMsg };
  }

  /**
   * wx.requestMerchantTransfer: WeChat's 确认收款 page for the object, then WeChat (the simulator,
   * through the server's /sim proxy) checking its package, merchant and mini program and that
   * this phone's user is the payee. "收款" confirms (`requestMerchantTransfer:ok`: the page was
   * shown and confirmed, the money follows by WeChat's notification to the server); "取消" is the
   * simulator's `result: CANCEL` (`requestMerchantTransfer:fail cancel`, the transfer still waits).
   */
  async requestMerchantTransfer(options) {
    for (const key of ['mchId', 'package']) {
      if (typeof options[key] !== 'string' || !options[key]) {
        return { errMsg: `requestMerchantTransfer:fail parameter error: parameter.${key} should be String` };
      }
    }
    const object = {};
    for (const key of ['mchId', 'subMchId', 'appId', 'subAppId', 'package', 'openId']) {
      if (typeof options[key] === 'string') object[key] = options[key];
    }
    const choice = this.transferChoices.length ? this.transferChoices.shift() : 'confirm';
    const record = { object, choice, errMsg: '', sim: null };
    this.merchantTransfers.push(record);
    const body = { ...object, openid: this.phone.openid };
    if (choice === 'cancel') body.result = 'CANCEL';
    const res = await call('POST', `${this.phone.wechat}/sim/transfers/confirm`, { body });
    record.sim = res;
    record.errMsg = (res.body && res.body.errMsg) || `requestMerchantTransfer:fail HTTP ${res.status}`;
    if (res.status === 404 && !(res.body && res.body.errMsg)) {
      problems.push(`the server's /sim proxy refused POST /sim/transfers/confirm: ${res.status} ${JSON.stringify(res.body)}`);
    }
    return { errMsg: record.errMsg };
  }

  /**
   * WeChat's confirm-receipt component (businessType weappOrderConfirm), opened with
   * `extraData` {transaction_id} or {merchant_id, merchant_trade_no}: it finds the order among
   * this user's payments, the user confirms (the simulator's POST /sim/orders/{no}/confirm-receipt,
   * through the server's /sim proxy) or cancels, and it goes back to the mini program as WeChat
   * does: App.onShow with referrerInfo {appId wx1183b055aeec94d1, extraData {status, errormsg,
   * req_extradata}} (scene 1038), then the page's onShow. An order not awaiting receipt answers
   * `cancel`, one WeChat cannot find for this user `fail` ("获取用户订单失败").
   */
  async confirmReceipt(extraData) {
    const record = { extraData: { ...extraData }, choice: '', status: '', errormsg: '', sim: null };
    this.receipts.push(record);
    if (this.app && typeof this.app.onHide === 'function') this.app.onHide();
    const shown = this.page;
    if (shown) this.lifecycle(shown, 'onHide');
    const mine = [...this.phone.transactions.values()];
    let no = '';
    if (typeof extraData.transaction_id === 'string' && extraData.transaction_id) {
      no = this.phone.transactions.get(extraData.transaction_id) || '';
    } else if (typeof extraData.merchant_trade_no === 'string' && mine.includes(extraData.merchant_trade_no)) {
      const order = await call('GET', `${this.phone.wechat}/sim/orders/${encodeURIComponent(extraData.merchant_trade_no)}`, { token: this.phone.adminToken });
      if (order.status === 200 && order.body.mchid === extraData.merchant_id) no = extraData.merchant_trade_no;
    }
    if (!no) {
      record.status = 'fail';
      record.errormsg = '获取用户订单失败';
    } else {
      record.choice = this.receiptChoices.length ? this.receiptChoices.shift() : 'confirm';
      if (record.choice === 'cancel') {
        record.status = 'cancel';
      } else {
        const res = await call('POST', `${this.phone.wechat}/sim/orders/${encodeURIComponent(no)}/confirm-receipt`, { token: this.phone.adminToken });
        record.sim = res;
        if (res.status === 200) {
          record.status = 'success';
        } else if (res.status === 409) {
          // Not shipped and awaiting receipt: the component answers cancel.
          record.status = 'cancel';
        } else {
          record.status = 'fail';
          record.errormsg = `获取用户订单失败 (${res.status})`;
          if (res.body && res.body.code === 'not_found') {
            problems.push(`the server's /sim proxy refused POST /sim/orders/${no}/confirm-receipt: ${res.status} ${JSON.stringify(res.body)}`);
          }
        }
      }
    }
    const answered = { status: record.status, req_extradata: { ...extraData } };
    if (record.status === 'fail') answered.errormsg = record.errormsg;
    const back = this.page;
    const options = {
      path: back ? back.route : '',
      query: back ? { ...back.query } : {},
      scene: 1038,
      referrerInfo: { appId: 'wx1183b055aeec94d1', extraData: answered },
    };
    if (this.app && typeof this.app.onShow === 'function') this.app.onShow(options);
    if (back) this.lifecycle(back, 'onShow');
  }
}

module.exports = { Phone, Relay, call, until, freePort, problems, ROOT };
