// The back office: orders, an order's timeline and refunds, the daily reconciliation, payments
// per hour, mini-program codes, the registry (merchants, mini programs, operators: registry.js),
// and in sandbox mode the simulator's faults, clock and deliveries. It also takes an operator's
// token, and then shows only what operators may use: their merchant's orders, refunds and daily
// reconciliation. For the admin, a red banner above every page lists the open alerts (a mini
// program whose payments WeChat restricted), each until acknowledged.
//
// Transfers (商家转账, payouts): the list by state with each merchant's limits and what is left
// today (the admin edits them), a form that makes one (amount typed in yuan, sent as integer fen,
// with its own out_bill_no so that a resubmit is a repeat), and a transfer's page with its
// timeline, followed until final, and "cancel" while its user has not confirmed. Operators use
// them for their merchant.

import {
  HttpError,
  bindLanguageSwitch,
  cstDate,
  dateTime,
  fenNumber,
  h,
  money,
  parseYuan,
  replace,
  request,
  sleep,
  orderStatusBadge,
  statusBadge,
  t,
  translatePage,
} from './common.js';
import { hourlyChart } from './chart.js';
import { appView, appsView, initRegistry, merchantView, merchantsView, operatorsView } from './registry.js';

const TOKEN_KEY = 'wxpay.console.adminToken';
const PAGE_SIZE = 20;
const STATUSES = ['NOTPAY', 'SUCCESS', 'REFUND', 'CLOSED', 'PAYERROR'];
const POLL_MS = 1000;
const POLL_LIMIT_MS = 60_000;
const ALERTS_EVERY_MS = 60_000;

const view = document.getElementById('view');
const loginSection = document.getElementById('login');
const loginForm = document.getElementById('login-form');
const loginError = document.getElementById('login-error');
const logoutButton = document.getElementById('logout');
const alertsBanner = document.getElementById('alerts');
const alertsList = document.getElementById('alerts-list');

let info = { sandbox: false, admin_api: true, api_version: '' };
// Who the stored token is (GET /admin/whoami): `{kind: 'admin'}` or `{kind: 'operator', mchid}`.
let principal = null;
// Every navigation bumps this; an async view checks it before writing, so that a slow answer
// of a page the person already left never overwrites the current one.
let renderSeq = 0;
// Cursors of the pages before the current one, per status filter (for "previous page").
const pageHistory = new Map();

// ---------------------------------------------------------------- token

function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

function forgetToken() {
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Nothing stored.
  }
  logoutButton.hidden = true;
  principal = null;
  showPrincipal();
  clearAlerts();
}

function isOperator() {
  return Boolean(principal && principal.kind === 'operator');
}

/** Shows only what the token may use, and says whose it is. */
function showPrincipal() {
  const operator = isOperator();
  for (const el of document.querySelectorAll('[data-admin-only]')) el.hidden = operator;
  for (const el of document.querySelectorAll('[data-sandbox-only]')) el.hidden = !info.sandbox || operator;
  const who = document.getElementById('whoami');
  who.hidden = !operator;
  who.textContent = operator ? t('whoami.operator', { mchid: principal.mchid }) : '';
}

/** Asks the server who the stored token is; false when it is refused. */
async function loadPrincipal() {
  try {
    principal = (await admin('GET', '/admin/whoami')).body;
  } catch (err) {
    if (err.status !== 401) principal = { kind: 'admin' };
  }
  showPrincipal();
  return principal !== null;
}

function showLogin(message = '') {
  view.hidden = true;
  loginSection.hidden = false;
  loginError.textContent = message;
  if (!info.admin_api) loginError.textContent = t('login.closed');
  document.getElementById('token').focus();
}

function hideLogin() {
  loginSection.hidden = true;
  view.hidden = false;
  logoutButton.hidden = !storedToken();
}

/** A back-office call with the stored token; a refused token asks for it again. */
async function admin(method, path, body) {
  const token = storedToken();
  if (!token) {
    showLogin();
    throw new HttpError(401, { code: 'unauthorized', message: t('login.required') });
  }
  try {
    return await request(method, path, { body, token });
  } catch (err) {
    if (err.status === 401) {
      forgetToken();
      showLogin(t('login.rejected'));
    }
    throw err;
  }
}

loginForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = document.getElementById('token');
  const token = input.value.trim();
  if (!token) return;
  let who;
  try {
    who = (await request('GET', '/admin/whoami', { token })).body;
  } catch (err) {
    loginError.textContent = err.status === 401 ? t('login.rejected') : describeError(err);
    return;
  }
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch {
    loginError.textContent = t('login.storage');
    return;
  }
  input.value = '';
  principal = who;
  showPrincipal();
  hideLogin();
  render();
});

logoutButton.addEventListener('click', () => {
  forgetToken();
  showLogin();
});

// ---------------------------------------------------------------- alerts

// Every refresh bumps this, so that an older answer never redraws over a newer one.
let alertsSeq = 0;

function clearAlerts() {
  alertsSeq += 1;
  alertsList.replaceChildren();
  alertsBanner.hidden = true;
}

const ALERT_KINDS = ['wxa_trade_controlled'];

/** One open alert: its kind, mini program, message and time, and "acknowledge". */
function alertItem(alert) {
  const status = h('span', { class: 'form-message alert-status', role: 'status' });
  const ack = h('button', { type: 'button', class: 'alert-ack', dataset: { ack: alert.id }, text: t('alert.acknowledge') });
  const item = h('li', { dataset: { alert: alert.id, kind: alert.kind, appid: alert.appid || '' } },
    h('strong', { class: 'alert-kind', text: ALERT_KINDS.includes(alert.kind) ? t(`alert.kind.${alert.kind}`) : alert.kind }),
    alert.appid ? h('a', { href: `#/apps/${encodeURIComponent(alert.appid)}`, class: 'mono alert-appid', text: alert.appid }) : null,
    h('span', { class: 'alert-message', text: alert.message }),
    h('time', { class: 'alert-time', text: dateTime(alert.created_at) }),
    ack,
    status);
  ack.addEventListener('click', async () => {
    ack.disabled = true;
    try {
      await admin('POST', `/admin/alerts/${encodeURIComponent(alert.id)}/acknowledge`);
    } catch (err) {
      // 404: no longer open (acknowledged elsewhere): it leaves the banner all the same.
      if (err.status !== 404) {
        status.className = 'form-message alert-status error';
        status.textContent = describeError(err);
        ack.disabled = false;
        return;
      }
    }
    // A refresh already under way may still list it: its answer is dropped.
    alertsSeq += 1;
    item.remove();
    if (!alertsList.children.length) alertsBanner.hidden = true;
  });
  return item;
}

/**
 * The admin's banner of open alerts (GET /admin/alerts), refreshed on every navigation and every
 * minute. Operators never see it (their token is refused there). A failed fetch leaves the banner
 * as it was: the back office works without it.
 */
async function refreshAlerts() {
  const token = storedToken();
  if (!token || !principal || principal.kind !== 'admin') {
    clearAlerts();
    return;
  }
  const seq = ++alertsSeq;
  let alerts;
  try {
    alerts = (await request('GET', '/admin/alerts', { token })).body.alerts;
  } catch {
    return;
  }
  if (seq !== alertsSeq) return;
  replace(alertsList, alerts.map(alertItem));
  alertsBanner.hidden = alerts.length === 0;
}

// ---------------------------------------------------------------- helpers

function describeError(err) {
  if (err instanceof HttpError) {
    return err.status ? `${t('error.http', { status: err.status })}: ${err.message}` : err.message;
  }
  return String(err && err.message ? err.message : err);
}

function errorBox(err) {
  return h('div', { class: 'notice error', role: 'alert', text: describeError(err) });
}

function field(label, value, extra = {}) {
  return h('div', { class: 'field', ...extra }, h('dt', { text: label }), h('dd', {}, value ?? ''));
}

function section(titleKey, ...children) {
  return h('section', { class: 'card' }, h('h2', { text: t(titleKey) }), ...children);
}

function table(headers, rows, attrs = {}) {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      attrs,
      h('thead', {}, h('tr', {}, headers.map((x) => h('th', { text: x })))),
      h('tbody', {}, rows),
    ),
  );
}

function orderLink(no) {
  return h('a', { href: `#/orders/${encodeURIComponent(no)}`, class: 'mono', text: no });
}

function current(seq) {
  return seq === renderSeq;
}

// ---------------------------------------------------------------- orders

/** `#/orders` with these filters and cursor. */
function ordersHash({ status, mchid, cursor }) {
  const q = new URLSearchParams();
  if (status) q.set('status', status);
  if (mchid) q.set('mchid', mchid);
  if (cursor) q.set('cursor', cursor);
  const text = q.toString();
  return text ? `#/orders?${text}` : '#/orders';
}

/** The admin's merchant filter (a select of the registry's merchants), or the operator's merchant. */
function merchantFilter(mchid) {
  if (isOperator()) return h('p', { class: 'muted', id: 'orders-scope', text: t('orders.scope', { mchid: principal.mchid }) });
  const choice = h('select', { id: 'orders-merchant', 'aria-label': t('orders.merchant_filter') },
    h('option', { value: '', text: t('orders.all_merchants') }),
    mchid ? h('option', { value: mchid, selected: true, text: mchid }) : null);
  choice.addEventListener('change', () => {
    const params = new URLSearchParams((location.hash.split('?')[1]) || '');
    location.hash = ordersHash({ status: params.get('status'), mchid: choice.value });
  });
  admin('GET', '/admin/merchants').then((answer) => {
    replace(choice, h('option', { value: '', text: t('orders.all_merchants') }),
      answer.body.merchants.map((m) => h('option', { value: m.mchid, selected: m.mchid === mchid, text: `${m.mchid} · ${m.name}` })));
  }).catch(() => {
    // The filter keeps the merchant it has; the orders still load.
  });
  return h('label', { class: 'merchant-filter' }, h('span', { text: t('orders.merchant_filter') }), choice);
}

async function ordersView(params) {
  const seq = renderSeq;
  const status = STATUSES.includes(params.get('status')) ? params.get('status') : '';
  const mchid = isOperator() ? '' : (params.get('mchid') || '').trim();
  const cursor = params.get('cursor') || '';
  const filterKey = `${status || 'ALL'}|${mchid}`;
  const history = pageHistory.get(filterKey) || [];
  if (!cursor) history.length = 0;
  pageHistory.set(filterKey, history);

  const filters = h(
    'div',
    { class: 'filters', role: 'group', 'aria-label': t('orders.filter') },
    ['', ...STATUSES].map((s) =>
      h('a', {
        href: ordersHash({ status: s, mchid }),
        class: `chip${s === status ? ' active' : ''}`,
        dataset: { filter: s || 'ALL' },
        text: s ? t(`status.${s}`) : t('orders.all'),
      }),
    ),
  );
  const refresh = h('button', { type: 'button', text: t('action.refresh'), onclick: () => render() });
  const body = h('div', { class: 'loading', text: t('loading') });
  replace(view, h('div', { class: 'view-head' }, h('h1', { text: t('nav.orders') }), refresh), h('div', { class: 'filter-bar' }, filters, merchantFilter(mchid)), body);

  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (status) query.set('status', status);
  if (mchid) query.set('mchid', mchid);
  if (cursor) query.set('cursor', cursor);
  let page;
  try {
    page = (await admin('GET', `/admin/orders?${query}`)).body;
  } catch (err) {
    if (current(seq)) replace(body, errorBox(err));
    return;
  }
  if (!current(seq)) return;
  body.className = '';
  const rows = page.orders.map((o) =>
    h(
      'tr',
      { dataset: { order: o.out_trade_no, status: o.status, mchid: o.mchid, appid: o.appid, ...(o.sub_mchid ? { subMchid: o.sub_mchid } : {}) } },
      h('td', {}, orderLink(o.out_trade_no)),
      h('td', { text: o.description }),
      h('td', { class: 'mono small', text: o.appid }),
      h('td', { class: 'mono small' }, o.mchid, o.sub_mchid
        ? h('span', { class: 'tag sub-mchid', title: t('order.sub_mchid'), text: `${t('order.sub_tag')} ${o.sub_mchid}` })
        : null),
      h('td', { class: 'num', text: money(o.amount_fen) }),
      h('td', {}, orderStatusBadge(o)),
      h('td', { class: 'num', text: o.refunded_fen ? money(o.refunded_fen) : '' }),
      h('td', { text: dateTime(o.created_at) }),
      h('td', { text: dateTime(o.paid_at) }),
    ),
  );
  const goTo = (c) => {
    location.hash = ordersHash({ status, mchid, cursor: c });
  };
  const prev = h('button', {
    type: 'button',
    id: 'page-prev',
    disabled: !cursor,
    text: t('page.prev'),
    onclick: () => goTo(history.length ? history.pop() : ''),
  });
  const next = h('button', {
    type: 'button',
    id: 'page-next',
    disabled: !page.next_cursor,
    text: t('page.next'),
    onclick: () => {
      history.push(cursor);
      goTo(page.next_cursor);
    },
  });
  replace(
    body,
    rows.length
      ? table(
          [t('order.no'), t('order.description'), t('order.app'), t('order.merchant'), t('order.amount'), t('order.status'), t('order.refunded'), t('order.created'), t('order.paid')],
          rows,
          { id: 'orders-table' },
        )
      : h('p', { class: 'muted', text: t('orders.none') }),
    h('div', { class: 'pager' }, prev, h('span', { class: 'muted', text: t('page.size', { n: rows.length }) }), next),
  );
}

// ---------------------------------------------------------------- one order

const EVENT_KINDS = [
  'created', 'prepay', 'prepay_failed', 'notification', 'notification_rejected', 'query', 'query_failed',
  'closed', 'pay_error', 'refund_requested', 'refund', 'webhook_delivered', 'webhook_failed', 'reconciliation',
  'shipment', 'shipping_uploaded', 'shipping_upload_failed', 'trade_management', 'received', 'settled',
];

function eventDetail(detail) {
  if (!detail || typeof detail !== 'object') return [];
  return Object.entries(detail).map(([key, value]) => {
    let cls = 'kv';
    if (key === 'verified') cls += value === true ? ' ok' : ' bad';
    if (key === 'result' && value === 'rejected') cls += ' bad';
    if (key === 'error' || key === 'reason') cls += ' bad';
    let text = typeof value === 'object' && value !== null ? JSON.stringify(value) : String(value);
    if (key.endsWith('_fen') && Number.isSafeInteger(value)) text = money(value);
    const label = key === 'verified' && value === true ? t('timeline.verified') : `${key}: ${text}`;
    return h('span', { class: cls, dataset: { key }, text: label });
  });
}

function timeline(events) {
  return h(
    'ol',
    { class: 'timeline', id: 'timeline' },
    events.map((e) =>
      h(
        'li',
        { dataset: { kind: e.kind }, class: `event event-${e.kind}` },
        h('time', { text: dateTime(e.created_at) }),
        h('strong', { text: EVENT_KINDS.includes(e.kind) ? t(`event.${e.kind}`) : e.kind }),
        h('span', { class: 'details' }, eventDetail(e.detail)),
      ),
    ),
  );
}

function refundForm(detail, onDone) {
  const refundable = BigInt(detail.refundable_fen);
  const amount = h('input', {
    id: 'refund-amount',
    name: 'amount',
    inputmode: 'decimal',
    autocomplete: 'off',
    required: true,
    placeholder: t('refund.max', { amount: money(refundable) }),
  });
  const reason = h('input', { id: 'refund-reason', name: 'reason', maxlength: '80', autocomplete: 'off' });
  const message = h('p', { class: 'form-message', id: 'refund-message', role: 'status' });
  const submit = h('button', { type: 'submit', class: 'primary', text: t('refund.submit') });
  const form = h(
    'form',
    { class: 'refund-form', id: 'refund-form' },
    h('label', {}, h('span', { text: t('refund.amount') }), amount),
    h('label', {}, h('span', { text: t('refund.reason') }), reason),
    submit,
    message,
  );
  // The form's own refund number, sent with the refund: a submit retried after a lost answer
  // finds the refund the first one made instead of making a second. A new amount or reason is
  // another refund, with another number.
  let refundNo = null;
  let refundOf = null;
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const fen = parseYuan(amount.value);
    message.className = 'form-message error';
    if (fen === null || fen <= 0n) {
      message.textContent = t('refund.invalid');
      return;
    }
    if (fen > refundable) {
      message.textContent = t('refund.too_much', { amount: money(refundable) });
      return;
    }
    submit.disabled = true;
    try {
      const body = { amount_fen: fenNumber(fen) };
      if (reason.value.trim()) body.reason = reason.value.trim();
      const intent = JSON.stringify(body);
      if (intent !== refundOf) {
        refundNo = newRefundNo();
        refundOf = intent;
      }
      body.out_refund_no = refundNo;
      const answer = await admin('POST', `/admin/orders/${encodeURIComponent(detail.order.out_trade_no)}/refunds`, body);
      onDone({
        no: answer.body.out_refund_no,
        className: 'form-message ok',
        text: t(answer.status === 202 ? 'refund.pending' : 'refund.accepted', {
          no: answer.body.out_refund_no,
          amount: money(answer.body.amount_fen),
        }),
      });
    } catch (err) {
      message.textContent = describeError(err);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

/** "Log out everywhere": revokes every session of the user (every instance refuses them at once). */
function revokeSessionsButton(openid) {
  const message = h('span', { class: 'form-message', id: 'revoke-message' });
  const button = h('button', { type: 'button', id: 'revoke-sessions', text: t('session.revoke') });
  button.addEventListener('click', async () => {
    if (!window.confirm(t('session.revoke_confirm'))) return;
    button.disabled = true;
    try {
      const answer = await admin('POST', `/admin/users/${encodeURIComponent(openid)}/sessions/revoke`, {});
      message.className = 'form-message ok';
      message.textContent = t('session.revoked', { count: answer.body.revoked });
    } catch (err) {
      message.className = 'form-message error';
      message.textContent = describeError(err);
    } finally {
      button.disabled = false;
    }
  });
  return h('span', {}, button, ' ', message);
}

/** A fresh out_refund_no: `RFC`, the time, 16 random hex digits (WeChat: 1-64 of [0-9A-Za-z_|*@-]). */
function newRefundNo() {
  const random = crypto.getRandomValues(new Uint8Array(8));
  return `RFC${Date.now()}${[...random].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}

// A message of the refund form, kept across the reload that follows the refund.
let refundFlash = null;

async function orderView(no) {
  const seq = renderSeq;
  const flash = refundFlash;
  refundFlash = null;
  const shipped = shipFlash;
  shipFlash = null;
  const holder = h('div', { class: 'loading', text: t('loading') });
  replace(
    view,
    h('div', { class: 'view-head' }, h('a', { href: '#/orders', class: 'back', text: t('action.back') }), h('h1', { class: 'mono', text: no })),
    holder,
  );
  const started = Date.now();
  let shown = '';
  for (;;) {
    let detail;
    try {
      detail = (await admin('GET', `/admin/orders/${encodeURIComponent(no)}`)).body;
    } catch (err) {
      if (current(seq)) replace(holder, errorBox(err));
      return;
    }
    if (!current(seq)) return;
    // Redrawn only when something changed, so that a half-typed refund survives the polling.
    const signature = JSON.stringify(detail);
    if (signature !== shown) {
      shown = signature;
      holder.className = '';
      replace(holder, orderDetail(detail));
      if (shipped) {
        const target = holder.querySelector('#ship-result');
        if (target) {
          target.textContent = shipped.text;
          target.className = shipped.className;
          target.hidden = false;
        }
      }
      if (flash) {
        // While the refund is processing, the form says it was accepted; once WeChat's answer
        // arrived, it says how the refund ended.
        const refund = detail.refunds.find((r) => r.out_refund_no === flash.no);
        const text = refund && refund.status !== 'PROCESSING'
          ? t('refund.ended', { no: refund.out_refund_no, status: t(`refund_status.${refund.status}`) })
          : flash.text;
        const target = holder.querySelector('#refund-message');
        if (target) {
          target.textContent = text;
          target.className = flash.className;
        } else {
          holder.prepend(h('div', { class: 'notice ok', id: 'refund-message', text }));
        }
      }
    }
    const processing = detail.refunds.some((r) => r.status === 'PROCESSING')
      || (detail.shipping_upload && detail.shipping_upload.status === 'pending');
    if (!processing) return;
    if (Date.now() - started > POLL_LIMIT_MS) {
      holder.prepend(h('div', { class: 'notice', text: t('refund.still_processing') }));
      return;
    }
    await sleep(POLL_MS);
    if (!current(seq)) return;
  }
}

function orderDetail(detail) {
  const o = detail.order;
  const summary = h(
    'dl',
    { class: 'fields', id: 'order-summary' },
    field(t('order.status'), orderStatusBadge(o)),
    field(t('order.amount'), money(o.amount_fen), { dataset: { field: 'amount' } }),
    field(t('order.refunded'), money(o.refunded_fen), { dataset: { field: 'refunded' } }),
    field(t('order.refundable'), h('strong', { id: 'refundable', text: money(detail.refundable_fen) })),
    field(t('order.description'), o.description),
    field(t('order.transaction_id'), h('span', { class: 'mono', text: o.transaction_id || '' })),
    field(t('order.openid'), h('span', {}, h('span', { class: 'mono', text: o.openid }), ' ', isOperator() ? null : revokeSessionsButton(o.openid))),
    field(t('order.app'), h('span', { class: 'mono', text: o.appid }), { dataset: { field: 'appid' } }),
    field(t('order.merchant'), h('span', { class: 'mono', text: o.mchid }), { dataset: { field: 'mchid' } }),
    o.sub_mchid ? field(t('order.sub_mchid'), h('span', { class: 'mono', text: o.sub_mchid }), { dataset: { field: 'sub_mchid' } }) : null,
    field(t('order.api_version'), o.api_version),
    field(t('order.source'), o.source),
    field(t('order.created'), dateTime(o.created_at)),
    field(t('order.paid'), dateTime(o.paid_at)),
    field(t('order.expires'), dateTime(o.expires_at)),
  );
  const items = o.items.length
    ? table(
        [t('item.name'), t('item.unit_price'), t('item.quantity'), t('item.subtotal')],
        o.items.map((i) =>
          h(
            'tr',
            {},
            h('td', { text: i.name }),
            h('td', { class: 'num', text: money(i.unit_price_fen) }),
            h('td', { class: 'num', text: i.quantity }),
            h('td', { class: 'num', text: money(BigInt(i.unit_price_fen) * BigInt(i.quantity)) }),
          ),
        ),
      )
    : null;
  const refunds = detail.refunds.length
    ? table(
        [t('refund.no'), t('refund.amount_col'), t('refund.status'), t('refund.reason'), t('refund.created'), t('refund.success_at'), t('refund.error')],
        detail.refunds.map((r) =>
          h(
            'tr',
            { dataset: { refund: r.out_refund_no, status: r.status } },
            h('td', { class: 'mono', text: r.out_refund_no }),
            h('td', { class: 'num', text: money(r.amount_fen) }),
            h('td', {}, statusBadge(r.status, 'refund_status')),
            h('td', { text: r.reason || '' }),
            h('td', { text: dateTime(r.created_at) }),
            h('td', { text: dateTime(r.success_at) }),
            h('td', { class: 'error-text', text: r.last_error || '' }),
          ),
        ),
        { id: 'refunds-table' },
      )
    : h('p', { class: 'muted', text: t('refund.none') });
  const webhooks = detail.webhooks.length
    ? table(
        [t('webhook.type'), t('webhook.id'), t('webhook.attempts'), t('webhook.delivered'), t('webhook.error')],
        detail.webhooks.map((w) =>
          h(
            'tr',
            {},
            h('td', { class: 'mono', text: w.event_type }),
            h('td', { class: 'mono', text: w.event_id }),
            h('td', { class: 'num', text: w.attempts }),
            h('td', { dataset: { webhookStatus: w.status }, text: w.delivered_at ? dateTime(w.delivered_at) : t(`webhook.${w.status}`) }),
            h('td', { class: 'error-text', text: w.last_error || '' }),
          ),
        ),
      )
    : h('p', { class: 'muted', text: t('webhook.none') });
  const refundSection = section(
    'refund.title',
    BigInt(detail.refundable_fen) > 0n
      ? refundForm(detail, (flash) => {
          refundFlash = flash;
          render();
        })
      : h('p', { class: 'muted', id: 'refund-unavailable', text: t('refund.unavailable') }),
    refunds,
  );
  return h(
    'div',
    { class: 'order-detail', dataset: { status: o.status } },
    section('order.summary', summary, items),
    shippingSection(detail),
    refundSection,
    section('timeline.title', timeline(detail.events)),
    section('webhook.title', webhooks),
  );
}

// ---------------------------------------------------------------- shipping

const DELIVERIES = ['express', 'same_city', 'virtual', 'pickup'];
const SHIPPING_STATES = ['awaiting_shipment', 'partially_shipped', 'shipped', 'received', 'settled'];
const UPLOAD_STATUSES = ['pending', 'uploaded', 'failed', 'not_managed'];
// WeChat's delivery_id of the common express companies, offered first; "other" takes any code
// of the mini program's list (GET /admin/apps/{appid}/delivery-companies, offered as a datalist).
const EXPRESS_COMPANIES = ['SF', 'YTO', 'ZTO', 'STO', 'YD', 'JTSDEXPRESS', 'EMS', 'JD'];

function deliveryLabel(delivery) {
  if (!delivery) return '—';
  return DELIVERIES.includes(delivery) ? t(`delivery_kind.${delivery}`) : delivery;
}

/** An order's shipping state as a badge (`data-shipping-state`), "—" before payment. */
function shippingStateBadge(state) {
  if (!state) return h('span', { class: 'muted', dataset: { shippingState: '' }, text: '—' });
  const cls = state === 'settled' || state === 'received' ? 'badge-success'
    : state === 'shipped' ? 'badge-refund'
      : 'badge-notpay';
  return h('span', {
    class: `badge ${cls}`,
    dataset: { shippingState: state },
    text: SHIPPING_STATES.includes(state) ? t(`shipping_state.${state}`) : state,
  });
}

function uploadBadge(upload) {
  const cls = upload.status === 'uploaded' ? 'badge-success'
    : upload.status === 'failed' ? 'badge-bad'
      : upload.status === 'not_managed' ? 'badge-closed'
        : 'badge-processing';
  return h('span', {
    class: `badge ${cls}`,
    dataset: { uploadStatus: upload.status },
    text: UPLOAD_STATUSES.includes(upload.status) ? t(`upload_status.${upload.status}`) : upload.status,
  });
}

/** Whether the console offers to ship the order: paid, express or same-city, not fully shipped. */
function shippable(order) {
  return (order.delivery === 'express' || order.delivery === 'same_city')
    && (order.shipping_state === 'awaiting_shipment' || order.shipping_state === 'partially_shipped');
}

/** "发货 / Shipping": the delivery, state and times, the parcels, WeChat's upload, the ship form. */
function shippingSection(detail) {
  const o = detail.order;
  const shipments = detail.shipments || [];
  const upload = detail.shipping_upload;
  const summary = h(
    'dl',
    { class: 'fields', id: 'shipping-summary' },
    field(t('shipping.delivery'), deliveryLabel(o.delivery), { dataset: { field: 'delivery', delivery: o.delivery || '' } }),
    field(t('shipping.state'), shippingStateBadge(o.shipping_state), { id: 'shipping-state' }),
    field(t('shipping.shipped_at'), dateTime(o.shipped_at), { dataset: { field: 'shipped_at' } }),
    field(t('shipping.received_at'), dateTime(o.received_at), { dataset: { field: 'received_at' } }),
    field(t('shipping.settled_at'), dateTime(o.settled_at), { dataset: { field: 'settled_at' } }),
    field(t('shipping.upload'), upload
      ? h('span', { id: 'shipping-upload', dataset: { status: upload.status } },
        uploadBadge(upload),
        ' ',
        h('small', { class: 'muted', text: t('shipping.attempts', { n: upload.attempts }) }),
        upload.uploaded_at ? h('small', { class: 'muted', text: ` · ${dateTime(upload.uploaded_at)}` }) : null,
        upload.last_error ? h('div', { class: 'error-text small', id: 'shipping-upload-error', text: upload.last_error }) : null)
      : h('span', { id: 'shipping-upload', class: 'muted', dataset: { status: '' }, text: t('shipping.upload_none') })),
  );
  const lineName = new Map((o.items || []).map((i) => [i.sku, i.name]));
  const parcels = shipments.length
    ? table(
        ['#', t('shipping.company'), t('shipping.tracking_no'), t('shipping.items'), t('shipping.receiver_contact'), t('shipping.last'), t('shipping.created')],
        shipments.map((p, i) =>
          h(
            'tr',
            { dataset: { shipment: p.id, company: p.express_company, tracking: p.tracking_no, last: String(Boolean(p.is_last)) } },
            h('td', { class: 'num', text: i + 1 }),
            h('td', { class: 'mono', text: p.express_company }),
            h('td', { class: 'mono', text: p.tracking_no }),
            h('td', {}, (p.items && p.items.length)
              ? p.items.map((x) => `${lineName.get(x.sku) || x.sku} × ${x.quantity}`).join('，')
              : h('span', { class: 'muted', text: p.item_desc || '' })),
            h('td', { class: 'mono', text: p.receiver_contact || '' }),
            h('td', { text: p.is_last ? '✓' : '' }),
            h('td', { text: dateTime(p.created_at) }),
          ),
        ),
        { id: 'shipments-table' },
      )
    : h('p', { class: 'muted', id: 'shipments-none', text: t('shipping.none') });
  const result = h('div', { class: 'notice ok', id: 'ship-result', role: 'status', hidden: true });
  let action = null;
  if (shippable(o)) {
    action = shipForm(detail, (flash) => {
      shipFlash = flash;
      render();
    });
  } else if (o.delivery === 'virtual' || o.delivery === 'pickup') {
    action = h('p', { class: 'muted', id: 'ship-unavailable', text: t('shipping.not_needed') });
  } else if (!o.shipping_state) {
    action = h('p', { class: 'muted', id: 'ship-unavailable', text: t('shipping.unpaid') });
  }
  return h('section', { class: 'card', id: 'shipping' },
    h('h2', { text: t('shipping.title') }),
    result,
    summary,
    h('h3', { text: t('shipping.parcels', { n: shipments.length }) }),
    parcels,
    action);
}

// A message of the ship form, kept across the reload that follows a parcel.
let shipFlash = null;

function shipForm(detail, onDone) {
  const o = detail.order;
  const sameCity = o.delivery === 'same_city';
  const company = h('select', { id: 'ship-company', name: 'express_company', required: true },
    h('option', { value: '', text: t('shipping.company_choose') }),
    EXPRESS_COMPANIES.map((c) => h('option', { value: c, text: `${c} · ${t(`express.${c}`)}` })),
    h('option', { value: 'other', text: t('shipping.company_other') }));
  const companyList = h('datalist', { id: 'ship-companies' });
  const other = h('input', { id: 'ship-company-other', name: 'express_company_other', maxlength: '64', autocomplete: 'off', placeholder: t('shipping.company_code'), list: 'ship-companies' });
  const otherLabel = h('label', { hidden: true }, h('span', { text: t('shipping.company_code') }), other, companyList);
  const companiesNote = h('small', { class: 'muted', id: 'ship-companies-note', hidden: true });
  // WeChat's list for the order's mini program: the common companies it lists keep their place
  // in the select (with WeChat's names), every one is offered for "other". An express parcel
  // naming a company outside it is refused by the server.
  admin('GET', `/admin/apps/${encodeURIComponent(o.appid)}/delivery-companies`)
    .then((answer) => {
      const listed = new Map(answer.body.companies.map((c) => [c.delivery_id, c.delivery_name]));
      companyList.replaceChildren(...answer.body.companies.map((c) => h('option', { value: c.delivery_id, text: c.delivery_name })));
      if (sameCity) return;
      for (const option of [...company.options]) {
        if (!option.value || option.value === 'other') continue;
        if (!listed.has(option.value)) option.remove();
        else option.textContent = `${option.value} · ${listed.get(option.value)}`;
      }
      company.dataset.loaded = 'true';
    })
    .catch((err) => {
      companiesNote.hidden = false;
      companiesNote.textContent = t('shipping.companies_unavailable', { error: describeError(err) });
    });
  const tracking = h('input', { id: 'ship-tracking', name: 'tracking_no', maxlength: '128', autocomplete: 'off', required: true });
  const contact = h('input', { id: 'ship-contact', name: 'receiver_contact', maxlength: '32', autocomplete: 'off', placeholder: '189****1234' });
  const last = h('input', { type: 'checkbox', id: 'ship-last', name: 'last', checked: sameCity, disabled: sameCity });
  const quantities = (o.items || []).map((i) => ({
    sku: i.sku,
    max: i.quantity,
    input: h('input', { type: 'number', min: '0', max: String(i.quantity), step: '1', class: 'qty', name: `qty-${i.sku}`, dataset: { sku: i.sku }, 'aria-label': `${i.name} (≤ ${i.quantity})` }),
    name: i.name,
  }));
  const items = quantities.length
    ? h('fieldset', { class: 'ship-items form-wide' },
      h('legend', { text: t('shipping.items_help') }),
      quantities.map((q) => h('label', { class: 'ship-item' }, h('span', { text: `${q.name} (≤ ${q.max})` }), q.input)))
    : null;
  const message = h('p', { class: 'form-message', id: 'ship-message', role: 'status' });
  const submit = h('button', { type: 'submit', class: 'primary', text: t('shipping.submit') });
  company.addEventListener('change', () => {
    otherLabel.hidden = company.value !== 'other';
  });
  const form = h(
    'form',
    { class: 'inline-form ship-form', id: 'ship-form' },
    h('label', {}, h('span', { text: t('shipping.company') }), company, companiesNote),
    otherLabel,
    h('label', {}, h('span', { text: t('shipping.tracking_no') }), tracking),
    h('label', {}, h('span', { text: t('shipping.receiver_contact') }), contact),
    h('label', { class: 'check' }, last, h('span', { text: sameCity ? t('shipping.last_same_city') : t('shipping.last_parcel') })),
    items,
    submit,
    message,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    message.className = 'form-message error';
    const code = company.value === 'other' ? other.value.trim() : company.value;
    if (!code) {
      message.textContent = t('shipping.company_required');
      return;
    }
    const trackingNo = tracking.value.trim();
    if (!trackingNo) {
      message.textContent = t('shipping.tracking_required');
      return;
    }
    if (code === 'SF' && !contact.value.trim()) {
      message.textContent = t('shipping.contact_required');
      return;
    }
    const body = { express_company: code, tracking_no: trackingNo, last: last.checked };
    if (contact.value.trim()) body.receiver_contact = contact.value.trim();
    const chosen = [];
    for (const q of quantities) {
      const text = q.input.value.trim();
      if (!text) continue;
      const n = Number(text);
      if (!Number.isInteger(n) || n < 0 || n > q.max) {
        message.textContent = t('shipping.quantity_invalid', { name: q.name, max: q.max });
        return;
      }
      if (n > 0) chosen.push({ sku: q.sku, quantity: n });
    }
    if (chosen.length) body.items = chosen;
    submit.disabled = true;
    message.textContent = '';
    try {
      const answer = await admin('POST', `/admin/orders/${encodeURIComponent(o.out_trade_no)}/shipments`, body);
      onDone({
        className: 'notice ok',
        text: t(answer.status === 201 ? 'shipping.recorded' : 'shipping.repeated', {
          company: answer.body.shipment.express_company,
          no: answer.body.shipment.tracking_no,
        }),
      });
    } catch (err) {
      message.className = 'form-message error';
      message.textContent = describeError(err);
      submit.disabled = false;
    }
  });
  return form;
}

// ---------------------------------------------------------------- fulfilment: overdue, unsettled

const OVERDUE_HOURS = [0, 12, 24, 48, 72, 168, 720];

/** `#/overdue` or `#/unsettled` with these filters. */
function fulfilmentHash(tab, { hours, mchid } = {}) {
  const q = new URLSearchParams();
  if (tab === 'overdue' && hours !== undefined && hours !== null && hours !== '') q.set('hours', String(hours));
  if (mchid) q.set('mchid', mchid);
  const text = q.toString();
  return `#/${tab}${text ? `?${text}` : ''}`;
}

/** The admin's merchant choice for the fulfilment pages (operators see their own merchant's only). */
function fulfilmentMerchant(mchid, onChoose) {
  if (isOperator()) return h('p', { class: 'muted', text: t('orders.scope', { mchid: principal.mchid }) });
  const choice = h('select', { id: 'fulfilment-merchant', 'aria-label': t('orders.merchant_filter') },
    h('option', { value: '', text: t('orders.all_merchants') }),
    mchid ? h('option', { value: mchid, selected: true, text: mchid }) : null);
  choice.addEventListener('change', () => onChoose(choice.value));
  admin('GET', '/admin/merchants').then((answer) => {
    replace(choice, h('option', { value: '', text: t('orders.all_merchants') }),
      answer.body.merchants.map((m) => h('option', { value: m.mchid, selected: m.mchid === mchid, text: `${m.mchid} · ${m.name}` })));
  }).catch(() => {
    // The select keeps the merchant it has; the list still loads.
  });
  return h('label', { class: 'merchant-filter' }, h('span', { text: t('orders.merchant_filter') }), choice);
}

function fulfilmentTabs(tab, mchid) {
  return h('div', { class: 'filters', role: 'tablist', id: 'fulfilment-tabs' },
    ['overdue', 'unsettled'].map((x) => h('a', {
      href: fulfilmentHash(x, { mchid }),
      class: `chip${x === tab ? ' active' : ''}`,
      role: 'tab',
      'aria-selected': x === tab ? 'true' : 'false',
      dataset: { tab: x },
      text: t(`fulfilment.tab.${x}`),
    })));
}

/** Hours since `ms` as "N h" (whole hours, rounded down). */
function hoursSince(ms) {
  if (ms === null || ms === undefined) return '';
  return t('fulfilment.hours_ago', { n: Math.max(0, Math.floor((Date.now() - ms) / 3_600_000)) });
}

async function overdueView(params) {
  const seq = renderSeq;
  const mchid = isOperator() ? '' : (params.get('mchid') || '').trim();
  const asked = Number.parseInt(params.get('hours') ?? '', 10);
  const hours = Number.isInteger(asked) && asked >= 0 && asked <= 720 ? asked : 48;
  const hoursChoice = h('select', { id: 'overdue-hours', 'aria-label': t('fulfilment.hours') },
    [...new Set([...OVERDUE_HOURS, hours])].sort((a, b) => a - b).map((n) =>
      h('option', { value: String(n), selected: n === hours, text: t('fulfilment.hours_option', { n }) })));
  hoursChoice.addEventListener('change', () => {
    location.hash = fulfilmentHash('overdue', { hours: hoursChoice.value, mchid });
  });
  const body = h('div', { class: 'loading', text: t('loading') });
  replace(
    view,
    h('div', { class: 'view-head' }, h('h1', { text: t('nav.fulfilment') }), h('button', { type: 'button', text: t('action.refresh'), onclick: () => render() })),
    fulfilmentTabs('overdue', mchid),
    h('p', { class: 'muted', text: t('fulfilment.overdue_help') }),
    h('div', { class: 'filter-bar' },
      h('label', {}, h('span', { text: t('fulfilment.hours') }), hoursChoice),
      fulfilmentMerchant(mchid, (chosen) => {
        location.hash = fulfilmentHash('overdue', { hours, mchid: chosen });
      })),
    body,
  );
  const query = new URLSearchParams({ hours: String(hours) });
  if (mchid) query.set('mchid', mchid);
  let answer;
  try {
    answer = (await admin('GET', `/admin/fulfilment/overdue?${query}`)).body;
  } catch (err) {
    if (current(seq)) replace(body, errorBox(err));
    return;
  }
  if (!current(seq)) return;
  body.className = '';
  const rows = answer.orders.map((o) => h(
    'tr',
    { dataset: { order: o.out_trade_no, shippingState: o.shipping_state || '', mchid: o.mchid } },
    h('td', {}, orderLink(o.out_trade_no)),
    h('td', { text: o.description }),
    h('td', { class: 'mono small', text: o.mchid }),
    h('td', { class: 'num', text: money(o.amount_fen) }),
    h('td', { text: deliveryLabel(o.delivery) }),
    h('td', {}, shippingStateBadge(o.shipping_state)),
    h('td', { text: dateTime(o.paid_at) }),
    h('td', { class: 'num', text: hoursSince(o.paid_at) }),
  ));
  replace(body,
    h('p', { id: 'overdue-count', dataset: { count: String(rows.length), hours: String(answer.hours) }, text: t('fulfilment.overdue_count', { n: rows.length, hours: answer.hours }) }),
    rows.length
      ? table([t('order.no'), t('order.description'), t('order.merchant'), t('order.amount'), t('shipping.delivery'), t('shipping.state'), t('order.paid'), t('fulfilment.since_paid')], rows, { id: 'overdue-table' })
      : h('p', { class: 'muted', id: 'overdue-none', text: t('fulfilment.overdue_none') }));
}

async function unsettledView(params) {
  const seq = renderSeq;
  const mchid = isOperator() ? '' : (params.get('mchid') || '').trim();
  const body = h('div', { class: 'loading', text: t('loading') });
  replace(
    view,
    h('div', { class: 'view-head' }, h('h1', { text: t('nav.fulfilment') }), h('button', { type: 'button', text: t('action.refresh'), onclick: () => render() })),
    fulfilmentTabs('unsettled', mchid),
    h('p', { class: 'muted', text: t('fulfilment.unsettled_help') }),
    h('div', { class: 'filter-bar' }, fulfilmentMerchant(mchid, (chosen) => {
      location.hash = fulfilmentHash('unsettled', { mchid: chosen });
    })),
    body,
  );
  const query = new URLSearchParams();
  if (mchid) query.set('mchid', mchid);
  let answer;
  try {
    answer = (await admin('GET', `/admin/fulfilment/unsettled${query.toString() ? `?${query}` : ''}`)).body;
  } catch (err) {
    if (current(seq)) replace(body, errorBox(err));
    return;
  }
  if (!current(seq)) return;
  body.className = '';
  const rows = answer.orders.map((o) => h(
    'tr',
    { dataset: { order: o.out_trade_no, shippingState: o.shipping_state || '', mchid: o.mchid } },
    h('td', {}, orderLink(o.out_trade_no)),
    h('td', { text: o.description }),
    h('td', { class: 'mono small', text: o.mchid }),
    h('td', { class: 'num', text: money(BigInt(o.amount_fen) - BigInt(o.refunded_fen || 0)) }),
    h('td', { text: deliveryLabel(o.delivery) }),
    h('td', {}, shippingStateBadge(o.shipping_state)),
    h('td', { text: dateTime(o.paid_at) }),
    h('td', { text: dateTime(o.shipped_at) }),
    h('td', { text: dateTime(o.received_at) }),
  ));
  replace(body,
    h('section', { class: 'card' },
      h('dl', { class: 'fields', id: 'unsettled-summary' },
        field(t('fulfilment.unsettled_total'), h('strong', { id: 'unsettled-total', dataset: { fen: String(answer.total_fen) }, text: money(answer.total_fen) })),
        field(t('fulfilment.unsettled_count'), h('strong', { id: 'unsettled-count', text: answer.count })))),
    rows.length
      ? table([t('order.no'), t('order.description'), t('order.merchant'), t('fulfilment.held'), t('shipping.delivery'), t('shipping.state'), t('order.paid'), t('shipping.shipped_at'), t('shipping.received_at')], rows, { id: 'unsettled-table' })
      : h('p', { class: 'muted', id: 'unsettled-none', text: t('fulfilment.unsettled_none') }));
}

// ---------------------------------------------------------------- reconciliation

const RESULTS = ['matched', 'missing_in_database', 'missing_in_bill', 'amount_mismatch', 'state_mismatch'];

/** `#/reconciliation/{date}`, with `?mchid=` when a merchant was chosen. */
function reconciliationHash(date, mchid) {
  return `#/reconciliation/${date}${mchid ? `?${new URLSearchParams({ mchid })}` : ''}`;
}

/**
 * The merchant whose bill is shown: the admin chooses among the registry's merchants (none
 * chosen: the server's default, the first merchant, which the select shows once known); an
 * operator has its own merchant only (GET /admin/merchants is the admin's).
 */
function reconciliationMerchant(mchid, onChoose) {
  if (isOperator()) {
    return {
      el: h('label', {}, h('span', { text: t('orders.merchant_filter') }),
        h('select', { id: 'recon-merchant', disabled: true }, h('option', { value: principal.mchid, selected: true, text: principal.mchid }))),
      show() {},
    };
  }
  const choice = h('select', { id: 'recon-merchant', 'aria-label': t('orders.merchant_filter') },
    mchid ? h('option', { value: mchid, selected: true, text: mchid }) : null);
  let shown = mchid;
  let merchants = null;
  const draw = () => {
    if (!merchants) return;
    const known = merchants.some((m) => m.mchid === shown);
    // None chosen and the report not in yet: the merchant file's (the server's first), else the first.
    const selected = known ? shown : (merchants.find((m) => m.source === 'file') || merchants[0] || {}).mchid;
    replace(choice,
      shown && !known ? h('option', { value: shown, selected: true, text: shown }) : null,
      merchants.map((m) => h('option', { value: m.mchid, selected: m.mchid === selected, text: `${m.mchid} · ${m.name}` })));
  };
  choice.addEventListener('change', () => onChoose(choice.value));
  admin('GET', '/admin/merchants').then((answer) => {
    merchants = answer.body.merchants;
    draw();
  }).catch(() => {
    // The select keeps the merchant it has; the report still loads.
  });
  return {
    el: h('label', {}, h('span', { text: t('orders.merchant_filter') }), choice),
    /** Marks the merchant of the report shown (the server's default when none was chosen). */
    show(value) {
      if (!value || shown) return;
      shown = value;
      if (merchants) draw();
      else replace(choice, h('option', { value, selected: true, text: value }));
    },
  };
}

async function reconciliationView(date, params = new URLSearchParams(), refresh = false) {
  const seq = renderSeq;
  const day = date || cstDate(1);
  const mchid = isOperator() ? '' : (params.get('mchid') || '').trim();
  const input = h('input', { type: 'date', id: 'bill-date', value: day, required: true });
  const show = h('button', { type: 'submit', text: t('recon.show') });
  const again = h('button', { type: 'button', id: 'recon-refresh', text: t('recon.refresh') });
  const merchant = reconciliationMerchant(mchid, (chosen) => {
    location.hash = reconciliationHash(input.value || day, chosen);
  });
  const form = h('form', { class: 'inline-form', id: 'recon-form' },
    merchant.el,
    h('label', {}, h('span', { text: t('recon.date') }), input), show, again);
  const holder = h('div', { class: 'loading', text: t('recon.loading') });
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (input.value) location.hash = reconciliationHash(input.value, mchid);
  });
  again.addEventListener('click', () => {
    if (!input.value) return;
    const target = reconciliationHash(input.value, mchid);
    if (location.hash !== target) history.replaceState(null, '', target);
    renderSeq += 1;
    reconciliationView(input.value, params, true);
  });
  replace(view, h('div', { class: 'view-head' }, h('h1', { text: t('nav.reconciliation') })), h('p', { class: 'muted', text: t('recon.help') }), form, holder);
  const query = new URLSearchParams();
  if (mchid) query.set('mchid', mchid);
  if (refresh) query.set('refresh', 'true');
  let report;
  try {
    report = (await admin('GET', `/admin/reconciliation/${day}${query.toString() ? `?${query}` : ''}`)).body;
  } catch (err) {
    if (!current(seq)) return;
    replace(holder, err.code === 'bill_not_ready'
      ? h('div', { class: 'notice', id: 'bill-not-ready', text: `${t('recon.not_ready')} (${err.message})` })
      : errorBox(err));
    holder.className = '';
    return;
  }
  if (!current(seq)) return;
  holder.className = '';
  merchant.show(report.mchid);
  replace(holder, reconciliationReport(report));
}

function reconciliationReport(r) {
  const totals = (r.report && r.report.totals) || {};
  const items = (r.report && Array.isArray(r.report.items)) ? r.report.items : [];
  const onlyMismatches = h('input', { type: 'checkbox', id: 'only-mismatches' });
  const summary = h(
    'dl',
    { class: 'fields', id: 'recon-summary' },
    field(t('recon.status'), t(`recon.status.${r.status}`)),
    field(t('order.api_version'), r.api_version),
    field(t('recon.rows'), String(r.bill_rows)),
    field(t('recon.matched'), h('strong', { class: 'ok-text', id: 'recon-matched', text: r.matched })),
    field(t('recon.mismatched'), h('strong', { class: r.mismatched ? 'error-text' : '', id: 'recon-mismatched', text: r.mismatched })),
    field(t('recon.bill_payments'), money(totals.bill_payments_fen ?? 0)),
    field(t('recon.db_payments'), money(totals.db_payments_fen ?? 0)),
    field(t('recon.bill_refunds'), money(totals.bill_refunds_fen ?? 0)),
    field(t('recon.db_refunds'), money(totals.db_refunds_fen ?? 0)),
    field(t('recon.generated'), dateTime(r.updated_at)),
  );
  const amountOf = (fen) => (fen === null || fen === undefined ? '—' : money(fen));
  const rows = items.map((i) => {
    const bad = i.result !== 'matched';
    const amountDiffers = i.result === 'amount_mismatch';
    const stateDiffers = i.result === 'state_mismatch';
    return h(
      'tr',
      { class: bad ? 'mismatch' : 'matched', dataset: { result: i.result, order: i.out_trade_no } },
      h('td', { text: t(`recon.kind.${i.kind}`) }),
      h('td', {}, h('span', { class: `badge ${bad ? 'badge-bad' : 'badge-success'}`, text: RESULTS.includes(i.result) ? t(`recon.result.${i.result}`) : i.result })),
      h('td', {}, orderLink(i.out_trade_no), i.out_refund_no ? h('div', { class: 'mono small muted', text: i.out_refund_no }) : null),
      h('td', { class: 'mono', text: i.transaction_id || '' }),
      h('td', { class: `num${amountDiffers ? ' differs' : ''}`, text: amountOf(i.bill_amount_fen) }),
      h('td', { class: `num${amountDiffers ? ' differs' : ''}`, text: amountOf(i.db_amount_fen) }),
      h('td', { class: stateDiffers ? 'differs' : '', text: i.bill_state || '—' }),
      h('td', { class: stateDiffers ? 'differs' : '', text: i.db_state || '—' }),
    );
  });
  const itemTable = rows.length
    ? table(
        [t('recon.kind'), t('recon.result'), `${t('order.no')} / ${t('refund.no')}`, t('order.transaction_id'), t('recon.bill_amount'), t('recon.db_amount'), t('recon.bill_state'), t('recon.db_state')],
        rows,
        { id: 'recon-items' },
      )
    : h('p', { class: 'muted', text: r.status === 'no_bill' ? t('recon.no_bill') : t('recon.empty') });
  onlyMismatches.addEventListener('change', () => {
    for (const row of rows) row.hidden = onlyMismatches.checked && row.dataset.result === 'matched';
  });
  return h(
    'div',
    { class: 'recon', dataset: { date: r.bill_date, mchid: r.mchid || '' } },
    section('recon.summary', summary),
    section('recon.items', h('label', { class: 'check' }, onlyMismatches, h('span', { text: t('recon.only_mismatches') })), itemTable),
  );
}

// ---------------------------------------------------------------- stats

async function statsView() {
  const seq = renderSeq;
  const holder = h('div', { class: 'loading', text: t('loading') });
  replace(
    view,
    h('div', { class: 'view-head' }, h('h1', { text: t('stats.title') }), h('button', { type: 'button', text: t('action.refresh'), onclick: () => render() })),
    holder,
  );
  let hours;
  try {
    hours = (await admin('GET', '/admin/stats/hourly')).body.hours;
  } catch (err) {
    if (current(seq)) replace(holder, errorBox(err));
    return;
  }
  if (!current(seq)) return;
  holder.className = '';
  const count = hours.reduce((n, x) => n + x.payments, 0);
  const amount = hours.reduce((sum, x) => sum + BigInt(x.amount_fen), 0n);
  replace(
    holder,
    h('section', { class: 'card' },
      h('p', { id: 'stats-total', text: t('stats.total', { count, amount: money(amount) }) }),
      hourlyChart(hours),
      h('p', { class: 'legend' },
        h('span', { class: 'swatch swatch-amount' }), h('span', { text: t('stats.amount') }),
        h('span', { class: 'swatch swatch-count' }), h('span', { text: t('stats.count') })),
    ),
  );
}

// ---------------------------------------------------------------- mini-program code

/** The image of `url` (an API path) fetched with the admin token, as a blob: URL. */
async function adminImage(url) {
  const token = storedToken();
  if (!token) {
    showLogin();
    throw new HttpError(401, { code: 'unauthorized', message: t('login.required') });
  }
  let response;
  try {
    response = await fetch(url, { headers: { Authorization: `Bearer ${token}` }, credentials: 'same-origin', cache: 'no-store' });
  } catch {
    throw new HttpError(0, { message: t('error.network') });
  }
  if (!response.ok) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = { message: t('wxacode.failed') };
    }
    if (response.status === 401) {
      forgetToken();
      showLogin(t('login.rejected'));
    }
    throw new HttpError(response.status, body);
  }
  return URL.createObjectURL(await response.blob());
}

let wxacodeBlob = '';

function wxacodeView() {
  const scene = h('input', { id: 'wxacode-scene', value: 'shop=demo', maxlength: '32', required: true });
  const page = h('input', { id: 'wxacode-page', placeholder: 'pages/catalog/catalog', maxlength: '128' });
  const output = h('div', { class: 'wxacode-output', id: 'wxacode-output' });
  const form = h(
    'form',
    { class: 'inline-form', id: 'wxacode-form' },
    h('label', {}, h('span', { text: t('wxacode.scene') }), scene),
    h('label', {}, h('span', { text: t('wxacode.page') }), page),
    h('button', { type: 'submit', class: 'primary', text: t('wxacode.make') }),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const query = new URLSearchParams({ scene: scene.value });
    if (page.value.trim()) query.set('page', page.value.trim());
    const url = `/api/wxacode?${query}`;
    output.classList.remove('loaded');
    try {
      const src = await adminImage(url);
      if (wxacodeBlob) URL.revokeObjectURL(wxacodeBlob);
      wxacodeBlob = src;
      const img = h('img', { id: 'wxacode-image', alt: t('wxacode.alt', { scene: scene.value }), width: '280', height: '280', 'data-url': url });
      img.addEventListener('load', () => output.classList.add('loaded'));
      img.addEventListener('error', () => replace(output, h('div', { class: 'notice error', text: t('wxacode.failed') })));
      img.src = src;
      replace(output, h('figure', {}, img, h('figcaption', { class: 'mono', text: url })));
    } catch (err) {
      replace(output, errorBox(err));
    }
  });
  replace(view, h('div', { class: 'view-head' }, h('h1', { text: t('nav.wxacode') })), h('p', { class: 'muted', text: t('wxacode.help') }), h('section', { class: 'card' }, form, output));
}

// ---------------------------------------------------------------- sandbox

const RATE_FAULTS = ['notify_drop_rate', 'notify_duplicate_rate', 'signtest_probe_rate', 'api_error_rate'];
const DELAY_FAULTS = ['notify_delay_ms', 'api_latency_ms'];

async function sandboxView() {
  const seq = renderSeq;
  if (!info.sandbox) {
    replace(view, h('div', { class: 'notice', text: t('sandbox.absent') }));
    return;
  }
  const merchant = h('div', { class: 'loading', text: t('loading') });
  const clock = h('div');
  const faults = h('div');
  const deliveries = h('div');
  replace(
    view,
    h('div', { class: 'view-head' }, h('h1', { text: t('nav.sandbox') })),
    h('div', { class: 'grid-2' }, section('sandbox.merchant', merchant), section('sandbox.clock', clock)),
    section('sandbox.faults', h('p', { class: 'muted', text: t('sandbox.faults_help') }), faults),
    section('sandbox.deliveries', deliveries),
  );
  try {
    const [m, c, f, d] = await Promise.all([
      admin('GET', '/sim/merchant'),
      admin('GET', '/sim/clock'),
      admin('GET', '/sim/faults'),
      admin('GET', '/sim/notifications'),
    ]);
    if (!current(seq)) return;
    merchant.className = '';
    replace(merchant, h('dl', { class: 'fields' },
      field('appid', h('span', { class: 'mono', text: m.body.appid })),
      field('mchid', h('span', { class: 'mono', text: m.body.mchid })),
      field(t('sandbox.key_mode'), m.body.key_mode),
      field(t('sandbox.merchant_file'), h('span', { class: 'mono', text: m.body.merchant_json || '' }))));
    replace(clock, clockPanel(c.body));
    replace(faults, faultForm(f.body));
    replace(deliveries, deliveryLog(d.body.deliveries));
  } catch (err) {
    if (current(seq)) replace(merchant, errorBox(err));
  }
}

function clockPanel(state) {
  const now = h('strong', { id: 'sim-now', class: 'mono', text: state.now });
  const offset = h('span', { id: 'sim-offset', text: t('sandbox.offset', { s: state.offset_seconds }) });
  const message = h('p', { class: 'form-message', role: 'status' });
  const advance = (seconds) => async () => {
    try {
      const answer = (await admin('POST', '/sim/clock/advance', { seconds })).body;
      now.textContent = answer.now;
      offset.textContent = t('sandbox.offset', { s: answer.offset_seconds });
      message.className = 'form-message ok';
      message.textContent = t('sandbox.advanced', { n: answer.refunds_settled ?? 0 });
    } catch (err) {
      message.className = 'form-message error';
      message.textContent = describeError(err);
    }
  };
  return h('div', {},
    h('p', {}, now, ' ', offset),
    h('div', { class: 'buttons' },
      h('button', { type: 'button', id: 'clock-hour', text: t('sandbox.plus_hour'), onclick: advance(3600) }),
      h('button', { type: 'button', id: 'clock-day', text: t('sandbox.plus_day'), onclick: advance(86_400) })),
    message);
}

function faultForm(faults) {
  const inputs = {};
  const rows = [];
  for (const key of RATE_FAULTS) {
    inputs[key] = h('input', { type: 'number', id: `fault-${key}`, name: key, min: '0', max: '1', step: '0.05', value: String(faults[key] ?? 0) });
    rows.push(h('label', { class: 'fault' }, h('span', { text: t(`fault.${key}`) }), inputs[key], h('small', { class: 'muted', text: '0 – 1' })));
  }
  for (const key of DELAY_FAULTS) {
    inputs[key] = h('input', { type: 'number', id: `fault-${key}`, name: key, min: '0', max: '600000', step: '100', value: String(faults[key] ?? 0) });
    rows.push(h('label', { class: 'fault' }, h('span', { text: t(`fault.${key}`) }), inputs[key], h('small', { class: 'muted', text: 'ms' })));
  }
  const message = h('p', { class: 'form-message', id: 'faults-message', role: 'status' });
  const form = h('form', { class: 'fault-form', id: 'faults-form' }, rows,
    h('div', { class: 'buttons' },
      h('button', { type: 'submit', class: 'primary', text: t('action.save') }),
      h('button', { type: 'button', id: 'faults-clear', text: t('sandbox.faults_off'), onclick: () => {
        for (const input of Object.values(inputs)) input.value = '0';
        form.requestSubmit();
      } })),
    message);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = {};
    for (const [key, input] of Object.entries(inputs)) {
      const value = Number(input.value);
      if (!Number.isFinite(value) || value < 0) {
        message.className = 'form-message error';
        message.textContent = t('sandbox.fault_invalid', { name: t(`fault.${key}`) });
        return;
      }
      body[key] = DELAY_FAULTS.includes(key) ? Math.trunc(value) : value;
    }
    try {
      const saved = (await admin('PUT', '/sim/faults', body)).body;
      for (const [key, input] of Object.entries(inputs)) input.value = String(saved[key]);
      message.className = 'form-message ok';
      message.textContent = t('sandbox.faults_saved');
    } catch (err) {
      message.className = 'form-message error';
      message.textContent = describeError(err);
    }
  });
  return form;
}

function deliveryLog(records) {
  const holder = h('div', { id: 'deliveries' });
  const draw = (list) => {
    const rows = list.slice().reverse().map((d) => {
      const last = d.attempts[d.attempts.length - 1];
      const state = d.acked ? t('delivery.acked') : d.gave_up ? t('delivery.gave_up') : t('delivery.pending');
      return h(
        'tr',
        { class: d.acked ? '' : 'mismatch', dataset: { order: d.out_trade_no, kind: d.kind } },
        h('td', { class: 'num', text: d.id }),
        h('td', { text: t(`delivery.kind.${d.kind}`) }),
        h('td', { text: d.version }),
        h('td', {}, orderLink(d.out_trade_no)),
        h('td', { class: 'mono', text: d.out_refund_no || '' }),
        h('td', { class: 'num', text: d.attempts.length }),
        h('td', { text: last ? `${last.outcome}${last.status ? ` ${last.status}` : ''}${last.error ? ` (${last.error})` : ''}` : '' }),
        h('td', { text: state }),
        h('td', {}, h('details', {},
          h('summary', { text: t('delivery.attempts') }),
          h('ol', { class: 'attempts' }, d.attempts.map((a) => h('li', { text: `#${a.number} ${a.at} ${a.outcome}${a.status ? ` HTTP ${a.status}` : ''}${a.duplicate ? ' dup' : ''}${a.probe ? ' probe' : ''}${a.acked ? ' ack' : ''}${a.error ? ` ${a.error}` : ''}` }))),
          d.pruned ? null : h('pre', { class: 'body', text: d.body }))),
      );
    });
    replace(holder, rows.length
      ? table(['#', t('delivery.kind'), 'API', t('order.no'), t('refund.no'), t('delivery.count'), t('delivery.last'), t('delivery.state'), ''], rows, { id: 'deliveries-table' })
      : h('p', { class: 'muted', text: t('delivery.none') }));
  };
  const reload = async () => {
    try {
      draw((await admin('GET', '/sim/notifications')).body.deliveries);
    } catch (err) {
      replace(holder, errorBox(err));
    }
  };
  draw(records);
  return h('div', {},
    h('div', { class: 'buttons' },
      h('button', { type: 'button', id: 'deliveries-refresh', text: t('action.refresh'), onclick: reload }),
      h('button', { type: 'button', id: 'deliveries-flush', text: t('delivery.flush'), onclick: async () => {
        try {
          await admin('POST', '/sim/notifications/flush');
        } catch (err) {
          replace(holder, errorBox(err));
          return;
        }
        reload();
      } })),
    holder);
}

// ---------------------------------------------------------------- transfers (商家转账)

const TRANSFER_STATES = ['ACCEPTED', 'PROCESSING', 'WAIT_USER_CONFIRM', 'TRANSFERING', 'SUCCESS', 'FAIL', 'CANCELING', 'CANCELLED'];
const TRANSFER_FINAL = ['SUCCESS', 'FAIL', 'CANCELLED'];
// Before the user confirmed: the merchant may still cancel.
const TRANSFER_CANCELLABLE = ['ACCEPTED', 'PROCESSING', 'WAIT_USER_CONFIRM'];
// WeChat's transfer scenes the form offers: the report infos each needs (`info_type`, WeChat's own
// words, sent as they are) and what the user may be told the money is (none listed: not chosen).
const TRANSFER_SCENES = {
  1000: { infos: ['活动名称', '奖励说明'], perceptions: ['现金奖励', '活动奖励'] },
  1005: { infos: ['岗位类型', '报酬说明'], perceptions: [] },
  1011: { infos: ['赔付原因'], perceptions: ['退款', '商家赔付'] },
};
const TRANSFER_EVENT_KINDS = ['requested', 'state', 'refused', 'failed_attempt', 'cancel_requested', 'notification_rejected'];
const TRANSFER_VIAS = ['answer', 'resent', 'notification', 'query', 'refused', 'expired', 'admin'];
const TRANSFER_KV = ['operator', 'reason', 'amount_fen', 'openid', 'scene_id', 'via', 'state', 'fail_reason', 'transfer_bill_no', 'error'];

/** A transfer state's badge (`data-status`), coloured by how it stands. */
function transferBadge(status) {
  const cls = status === 'SUCCESS' ? 'badge-success'
    : status === 'FAIL' ? 'badge-bad'
      : status === 'CANCELLED' || status === 'CANCELING' ? 'badge-closed'
        : status === 'WAIT_USER_CONFIRM' ? 'badge-notpay'
          : 'badge-processing';
  return h('span', {
    class: `badge ${cls}`,
    dataset: { status },
    text: TRANSFER_STATES.includes(status) ? t(`transfer_status.${status}`) : status,
  });
}

function sceneLabel(scene) {
  return TRANSFER_SCENES[scene] ? t(`transfer.scene.${scene}`) : scene;
}

/** `#/transfers` with this status filter. */
function transfersHash(status) {
  return status ? `#/transfers?${new URLSearchParams({ status })}` : '#/transfers';
}

function transferLink(no) {
  return h('a', { href: `#/transfers/${encodeURIComponent(no)}`, class: 'mono', text: no });
}

// A message kept across the redraw that follows a change (a transfer made, cancelled, limits saved).
let transferFlash = null;

function takeTransferFlash() {
  const flash = transferFlash;
  transferFlash = null;
  return flash ? h('div', { class: `notice ${flash.ok ? 'ok' : 'error'}`, id: 'transfer-flash', role: 'status', text: flash.text }) : null;
}

async function transfersView(params) {
  const seq = renderSeq;
  const status = TRANSFER_STATES.includes(params.get('status')) ? params.get('status') : '';
  const flash = takeTransferFlash();
  const filters = h(
    'div',
    { class: 'filters', role: 'group', 'aria-label': t('transfer.filter'), id: 'transfer-filters' },
    ['', ...TRANSFER_STATES].map((s) => h('a', {
      href: transfersHash(s),
      class: `chip${s === status ? ' active' : ''}`,
      dataset: { filter: s || 'ALL' },
      text: s ? t(`transfer_status.${s}`) : t('orders.all'),
    })),
  );
  const limitsHolder = h('div', { class: 'loading', text: t('loading') });
  const body = h('div', { class: 'loading', text: t('loading') });
  replace(
    view,
    h('div', { class: 'view-head' }, h('h1', { text: t('nav.transfers') }), h('button', { type: 'button', text: t('action.refresh'), onclick: () => render() })),
    flash,
    h('p', { class: 'muted', text: t('transfer.help') }),
    h('div', { class: 'buttons' }, h('button', { type: 'button', class: 'primary', id: 'new-transfer', text: t('transfer.new'), onclick: () => {
      location.hash = '#/transfers/new';
    } })),
    section('transfer.limits', limitsHolder),
    filters,
    body,
  );
  const query = new URLSearchParams({ limit: '100' });
  if (status) query.set('status', status);
  let limits;
  let list;
  try {
    [limits, list] = await Promise.all([
      admin('GET', '/admin/transfers/limits').then((a) => a.body),
      admin('GET', `/admin/transfers?${query}`).then((a) => a.body.transfers),
    ]);
  } catch (err) {
    if (current(seq)) replace(body, errorBox(err));
    return;
  }
  if (!current(seq)) return;
  limitsHolder.className = '';
  replace(limitsHolder, limitsTable(limits));
  body.className = '';
  const rows = list.map((x) => h(
    'tr',
    { dataset: { transfer: x.out_bill_no, status: x.status, mchid: x.mchid, appid: x.appid } },
    h('td', {}, transferLink(x.out_bill_no)),
    h('td', { class: 'mono small', text: x.openid }),
    h('td', { class: 'num', text: money(x.amount_fen) }),
    h('td', { text: sceneLabel(x.scene) }),
    h('td', { text: x.remark }),
    h('td', {}, transferBadge(x.status)),
    h('td', { class: 'mono small', text: x.operator }),
    h('td', { text: dateTime(x.created_at) }),
    h('td', { text: dateTime(x.finished_at) }),
  ));
  replace(body, rows.length
    ? table(
        [t('transfer.no'), t('transfer.openid'), t('transfer.amount'), t('transfer.scene'), t('transfer.remark'), t('transfer.status'), t('transfer.operator'), t('transfer.created_at'), t('transfer.finished')],
        rows,
        { id: 'transfers-table' },
      )
    : h('p', { class: 'muted', id: 'transfers-none', text: t('transfer.none') }));
}

/** Each visible merchant's limits and what is left today; the admin edits them. */
function limitsTable(limits) {
  const editor = h('div', { id: 'limits-editor' });
  const rows = limits.map((l) => h(
    'tr',
    { dataset: { limits: l.mchid, leftFen: String(l.left_today_fen) } },
    h('td', { class: 'mono', text: l.mchid }),
    h('td', { class: 'num', dataset: { field: 'budget' }, text: money(l.daily_budget_fen) }),
    h('td', { class: 'num', dataset: { field: 'cap' }, text: money(l.user_daily_cap_fen) }),
    h('td', { class: 'num', dataset: { field: 'used' }, text: money(l.used_today_fen) }),
    h('td', { class: 'num', dataset: { field: 'left' } }, h('strong', { text: money(l.left_today_fen) })),
    h('td', { text: t(l.own ? 'transfer.limits_own' : 'transfer.limits_default') }),
    isOperator() ? null : h('td', {}, h('button', { type: 'button', class: 'link', dataset: { editLimits: l.mchid }, text: t('registry.edit'), onclick: () => {
      replace(editor, limitsForm(l));
      editor.querySelector('input').focus();
    } })),
  ));
  return h('div', {},
    h('p', { class: 'muted', text: t('transfer.limits_help', { day: limits.length ? limits[0].day : '' }) }),
    rows.length
      ? table([t('order.merchant'), t('transfer.daily_budget'), t('transfer.user_cap'), t('transfer.used_today'), t('transfer.left_today'), t('registry.source'), isOperator() ? null : ''].filter((x) => x !== null), rows, { id: 'limits-table' })
      : h('p', { class: 'muted', text: t('registry.none') }),
    editor);
}

/** The admin's form for a merchant's own limits, in yuan (sent as integer fen). */
function limitsForm(l) {
  const budget = h('input', { id: 'limits-budget', inputmode: 'decimal', autocomplete: 'off', required: true, value: yuanText(l.daily_budget_fen) });
  const cap = h('input', { id: 'limits-cap', inputmode: 'decimal', autocomplete: 'off', required: true, value: yuanText(l.user_daily_cap_fen) });
  const message = h('p', { class: 'form-message', id: 'limits-message', role: 'status' });
  const submit = h('button', { type: 'submit', class: 'primary', text: t('action.save') });
  const form = h('form', { class: 'inline-form edit-form', id: 'limits-form', dataset: { mchid: l.mchid } },
    h('strong', { class: 'mono', text: l.mchid }),
    h('label', {}, h('span', { text: t('transfer.daily_budget_yuan') }), budget),
    h('label', {}, h('span', { text: t('transfer.user_cap_yuan') }), cap),
    submit,
    h('button', { type: 'button', text: t('action.cancel'), onclick: () => form.remove() }),
    message);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const budgetFen = parseYuan(budget.value);
    const capFen = parseYuan(cap.value);
    message.className = 'form-message error';
    if (budgetFen === null || capFen === null) {
      message.textContent = t('transfer.limits_invalid');
      return;
    }
    submit.disabled = true;
    try {
      const saved = (await admin('PUT', `/admin/transfers/limits/${encodeURIComponent(l.mchid)}`, {
        daily_budget_fen: fenNumber(budgetFen),
        user_daily_cap_fen: fenNumber(capFen),
      })).body;
      transferFlash = { ok: true, text: t('transfer.limits_saved', { mchid: saved.mchid, left: money(saved.left_today_fen) }) };
      render();
    } catch (err) {
      message.textContent = describeError(err);
      submit.disabled = false;
    }
  });
  return form;
}

/** Integer fen as the yuan a person types back ("12.05"). */
function yuanText(fen) {
  return money(fen).slice(1);
}

/** A fresh out_bill_no: `TC`, the time, 16 random hex digits (WeChat: 1-32 letters or digits). */
function newBillNo() {
  const random = crypto.getRandomValues(new Uint8Array(8));
  return `TC${Date.now()}${[...random].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}

async function transferNewView(params) {
  const seq = renderSeq;
  const holder = h('div', { class: 'loading', text: t('loading') });
  replace(
    view,
    h('div', { class: 'view-head' }, h('a', { href: '#/transfers', class: 'back', text: t('action.back') }), h('h1', { text: t('transfer.new') })),
    h('p', { class: 'muted', text: t('transfer.new_help') }),
    holder,
  );
  let apps = null;
  let limits;
  try {
    [apps, limits] = await Promise.all([
      // The registry is the admin's; an operator names the mini program (or leaves it to the server).
      isOperator() ? null : admin('GET', '/admin/apps').then((a) => a.body.apps),
      admin('GET', '/admin/transfers/limits').then((a) => a.body),
    ]);
  } catch (err) {
    if (current(seq)) replace(holder, errorBox(err));
    return;
  }
  if (!current(seq)) return;
  holder.className = '';
  replace(holder, h('section', { class: 'card' }, transferForm(apps, limits, params)));
}

function transferForm(apps, limits, params) {
  // The mini programs that can pay out: enabled, paying directly (not a provider's sub-merchant).
  const payable = apps ? apps.filter((a) => a.enabled && !a.sub_mchid) : null;
  let appField;
  let chosenApp;
  if (payable && payable.length > 1) {
    const wanted = params.get('appid');
    const preferred = payable.find((a) => a.appid === wanted) || payable.find((a) => a.source === 'file') || payable[0];
    const select = h('select', { id: 'transfer-app', name: 'appid' },
      payable.map((a) => h('option', { value: a.appid, selected: a === preferred, dataset: { mchid: a.mchid }, text: `${a.appid} · ${a.name} (${a.mchid})` })));
    chosenApp = () => payable.find((a) => a.appid === select.value);
    select.addEventListener('change', () => showLimits());
    appField = h('label', { class: 'form-field' }, h('span', { text: t('order.app') }), select);
  } else if (payable && payable.length === 1) {
    chosenApp = () => payable[0];
    appField = h('div', { class: 'form-field' }, h('span', { text: t('order.app') }),
      h('span', { class: 'mono', id: 'transfer-app-only', text: `${payable[0].appid} (${payable[0].mchid})` }));
  } else if (payable) {
    return h('div', { class: 'notice error', id: 'transfer-no-app', text: t('transfer.no_app') });
  } else {
    const input = h('input', { id: 'transfer-appid', name: 'appid', autocomplete: 'off', maxlength: '32', value: params.get('appid') || '', placeholder: t('transfer.appid_optional') });
    chosenApp = () => (input.value.trim() ? { appid: input.value.trim(), mchid: principal.mchid } : { appid: '', mchid: principal.mchid });
    appField = h('label', { class: 'form-field' }, h('span', { text: t('order.app') }), input);
  }

  const limitsLine = h('p', { class: 'form-wide muted', id: 'transfer-limits', role: 'status' });
  function showLimits() {
    const app = chosenApp();
    const l = limits.find((x) => app && x.mchid === app.mchid);
    if (!l) {
      limitsLine.textContent = '';
      delete limitsLine.dataset.leftFen;
      return;
    }
    limitsLine.dataset.leftFen = String(l.left_today_fen);
    limitsLine.dataset.capFen = String(l.user_daily_cap_fen);
    limitsLine.textContent = t('transfer.limits_line', { mchid: l.mchid, left: money(l.left_today_fen), budget: money(l.daily_budget_fen), cap: money(l.user_daily_cap_fen) });
  }

  const openid = h('input', { id: 'transfer-openid', name: 'openid', autocomplete: 'off', required: true, maxlength: '128', value: params.get('openid') || '' });
  const amount = h('input', { id: 'transfer-amount', name: 'amount', inputmode: 'decimal', autocomplete: 'off', required: true, placeholder: '0.10' });
  const scene = h('select', { id: 'transfer-scene', name: 'scene' },
    Object.keys(TRANSFER_SCENES).map((s) => h('option', { value: s, text: t(`transfer.scene.${s}`) })));
  const infos = h('fieldset', { class: 'ship-items form-wide', id: 'transfer-infos' });
  const perception = h('select', { id: 'transfer-perception', name: 'perception' });
  const remark = h('input', { id: 'transfer-remark', name: 'remark', autocomplete: 'off', required: true, maxlength: '32' });
  const reason = h('input', { id: 'transfer-reason', name: 'reason', autocomplete: 'off', required: true, maxlength: '200' });
  // The payee's real name goes to the server only (which encrypts it for WeChat at once): never
  // shown back, never logged.
  const name = h('input', { id: 'transfer-name', name: 'user_name', autocomplete: 'off', maxlength: '64', spellcheck: 'false' });
  const message = h('p', { class: 'form-message', id: 'transfer-message', role: 'status' });
  const submit = h('button', { type: 'submit', class: 'primary', text: t('transfer.submit') });

  /** The report-info fields and perceptions of the chosen scene, typed values kept per info type. */
  function showScene() {
    const typed = new Map([...infos.querySelectorAll('input[data-info-type]')].map((i) => [i.dataset.infoType, i.value]));
    const rules = TRANSFER_SCENES[scene.value];
    replace(infos,
      h('legend', { text: t('transfer.report_infos') }),
      rules.infos.map((type) => h('label', { class: 'form-field' },
        h('span', { text: t(`transfer.info.${type}`) }),
        h('input', { dataset: { infoType: type }, name: `info-${type}`, autocomplete: 'off', required: true, maxlength: '32', value: typed.get(type) || '' }))));
    replace(perception,
      h('option', { value: '', text: t('transfer.perception_none') }),
      rules.perceptions.map((p) => h('option', { value: p, text: p })));
  }
  scene.addEventListener('change', showScene);
  showScene();
  showLimits();

  const form = h(
    'form',
    { class: 'registry-form', id: 'transfer-form' },
    appField,
    h('label', { class: 'form-field' }, h('span', { text: t('transfer.openid') }), openid),
    h('label', { class: 'form-field' }, h('span', { text: t('transfer.amount_yuan') }), amount),
    limitsLine,
    h('label', { class: 'form-field' }, h('span', { text: t('transfer.scene') }), scene),
    h('label', { class: 'form-field' }, h('span', { text: t('transfer.perception') }), perception),
    infos,
    h('label', { class: 'form-field' }, h('span', { text: t('transfer.remark_shown') }), remark),
    h('label', { class: 'form-field' }, h('span', { text: t('transfer.reason_kept') }), reason),
    h('label', { class: 'form-field' }, h('span', { text: t('transfer.user_name') }), name, h('small', { class: 'muted', text: t('transfer.user_name_help') })),
    h('div', { class: 'buttons form-wide' }, submit),
    message,
  );
  // The form's own bill number, sent with the transfer: a submit retried after a lost answer
  // finds the transfer the first one made instead of making a second. Another request (any field
  // changed) is another transfer, with another number.
  let billNo = null;
  let billOf = null;
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    message.className = 'form-message error';
    const fen = parseYuan(amount.value);
    if (fen === null || fen < 10n) {
      message.textContent = t('transfer.amount_invalid');
      return;
    }
    const app = chosenApp();
    const body = {
      openid: openid.value.trim(),
      amount_fen: fenNumber(fen),
      scene: scene.value,
      report_infos: [...infos.querySelectorAll('input[data-info-type]')].map((i) => ({ info_type: i.dataset.infoType, info_content: i.value.trim() })),
      remark: remark.value.trim(),
      reason: reason.value.trim(),
    };
    if (app && app.appid) body.appid = app.appid;
    if (perception.value) body.perception = perception.value;
    if (name.value.trim()) body.user_name = name.value.trim();
    if (!body.openid || !body.remark || !body.reason || body.report_infos.some((i) => !i.info_content)) {
      message.textContent = t('transfer.fields_required');
      return;
    }
    const intent = JSON.stringify(body);
    if (intent !== billOf) {
      billNo = newBillNo();
      billOf = intent;
    }
    body.out_bill_no = billNo;
    submit.disabled = true;
    message.textContent = '';
    try {
      const answer = await admin('POST', '/admin/transfers', body);
      transferFlash = {
        ok: true,
        text: t(answer.status === 201 ? 'transfer.created' : 'transfer.repeated', { no: answer.body.out_bill_no, amount: money(answer.body.amount_fen) }),
      };
      location.hash = `#/transfers/${encodeURIComponent(answer.body.out_bill_no)}`;
    } catch (err) {
      message.className = 'form-message error';
      message.textContent = describeError(err);
      submit.disabled = false;
    }
  });
  return form;
}

async function transferView(no) {
  const seq = renderSeq;
  const flash = takeTransferFlash();
  const holder = h('div', { class: 'loading', text: t('loading') });
  replace(
    view,
    h('div', { class: 'view-head' }, h('a', { href: '#/transfers', class: 'back', text: t('action.back') }), h('h1', { class: 'mono', text: no }),
      h('button', { type: 'button', id: 'transfer-refresh', text: t('action.refresh'), onclick: () => render() })),
    flash,
    holder,
  );
  const started = Date.now();
  let shown = '';
  for (;;) {
    let detail;
    try {
      detail = (await admin('GET', `/admin/transfers/${encodeURIComponent(no)}`)).body;
    } catch (err) {
      if (current(seq)) replace(holder, errorBox(err));
      return;
    }
    if (!current(seq)) return;
    // Redrawn only when something changed, so that a message beside the cancel button stays.
    const signature = JSON.stringify(detail);
    if (signature !== shown) {
      shown = signature;
      holder.className = '';
      replace(holder, transferDetail(detail));
    }
    // Followed while WeChat or the user may still move it, for a minute.
    if (TRANSFER_FINAL.includes(detail.status)) return;
    if (Date.now() - started > POLL_LIMIT_MS) {
      holder.prepend(h('div', { class: 'notice', id: 'transfer-still', text: t('transfer.still_open') }));
      return;
    }
    await sleep(POLL_MS);
    if (!current(seq)) return;
  }
}

function transferDetail(d) {
  const summary = h(
    'dl',
    { class: 'fields', id: 'transfer-summary' },
    field(t('transfer.status'), transferBadge(d.status), { id: 'transfer-status', dataset: { status: d.status } }),
    field(t('transfer.amount'), h('strong', { text: money(d.amount_fen) }), { dataset: { field: 'amount', fen: String(d.amount_fen) } }),
    field(t('transfer.openid'), h('span', { class: 'mono', text: d.openid }), { dataset: { field: 'openid' } }),
    field(t('order.app'), h('span', { class: 'mono', text: d.appid })),
    field(t('order.merchant'), h('span', { class: 'mono', text: d.mchid })),
    field(t('transfer.scene'), sceneLabel(d.scene), { dataset: { field: 'scene' } }),
    field(t('transfer.report_infos'), h('span', { class: 'details' },
      (d.report_infos || []).map((i) => h('span', { class: 'kv', text: `${i.info_type}: ${i.info_content}` })))),
    field(t('transfer.perception'), d.perception || '—'),
    field(t('transfer.remark'), d.remark, { dataset: { field: 'remark' } }),
    field(t('transfer.reason'), d.reason, { dataset: { field: 'reason' } }),
    field(t('transfer.operator'), h('span', { class: 'mono', text: d.operator }), { dataset: { field: 'operator' } }),
    field(t('transfer.named'), t(d.named ? 'transfer.named_yes' : 'transfer.named_no')),
    field(t('transfer.bill_no'), h('span', { class: 'mono', text: d.transfer_bill_no || '' })),
    d.fail_reason ? field(t('transfer.fail_reason'), h('span', { class: 'error-text', text: d.fail_reason }), { dataset: { field: 'fail_reason' } }) : null,
    d.last_error ? field(t('transfer.last_error'), h('span', { class: 'error-text small', text: `${d.last_error} (${t('transfer.attempts', { n: d.attempts })})` })) : null,
    field(t('transfer.day'), d.day),
    field(t('transfer.created_at'), dateTime(d.created_at)),
    field(t('transfer.finished'), dateTime(d.finished_at), { dataset: { field: 'finished' } }),
  );
  let action = null;
  if (TRANSFER_CANCELLABLE.includes(d.status)) {
    const message = h('span', { class: 'form-message', id: 'transfer-cancel-message', role: 'status' });
    const button = h('button', { type: 'button', id: 'transfer-cancel', text: t('transfer.cancel') });
    button.addEventListener('click', async () => {
      if (!window.confirm(t('transfer.cancel_confirm', { no: d.out_bill_no, amount: money(d.amount_fen) }))) return;
      button.disabled = true;
      try {
        const after = (await admin('POST', `/admin/transfers/${encodeURIComponent(d.out_bill_no)}/cancel`, {})).body;
        transferFlash = { ok: true, text: t('transfer.cancel_sent', { status: t(`transfer_status.${after.status}`) }) };
        render();
      } catch (err) {
        message.className = 'form-message error';
        message.textContent = describeError(err);
        button.disabled = false;
      }
    });
    action = h('div', { class: 'buttons' }, button, message);
  }
  return h(
    'div',
    { class: 'transfer-detail', dataset: { status: d.status } },
    section('transfer.summary', summary, action),
    section('timeline.title', transferTimeline(d.timeline || [])),
  );
}

/** A transfer's timeline: who asked and why, each state WeChat reported (and how), cancels, failures. */
function transferTimeline(events) {
  return h(
    'ol',
    { class: 'timeline', id: 'transfer-timeline' },
    events.map((e) => {
      const detail = e.detail && typeof e.detail === 'object' ? e.detail : {};
      const title = e.kind === 'state' && detail.state
        ? t('transfer.event.state_is', { state: TRANSFER_STATES.includes(detail.state) ? t(`transfer_status.${detail.state}`) : detail.state })
        : TRANSFER_EVENT_KINDS.includes(e.kind) ? t(`transfer.event.${e.kind}`) : e.kind;
      const bad = e.kind === 'refused' || e.kind === 'failed_attempt' || e.kind === 'notification_rejected' || detail.state === 'FAIL';
      const good = detail.state === 'SUCCESS' || detail.via === 'notification';
      const tone = bad ? 'event-bad' : good ? 'event-ok' : e.kind === 'requested' || e.kind === 'cancel_requested' ? 'event-info' : '';
      return h(
        'li',
        { dataset: { kind: e.kind, state: detail.state || '', via: detail.via || '' }, class: `event event-${e.kind} ${tone}`.trim() },
        h('time', { text: dateTime(e.created_at) }),
        h('strong', { text: title }),
        h('span', { class: 'details' }, Object.entries(detail).map(([key, value]) => transferKv(e.kind, key, value))),
      );
    }),
  );
}

function transferKv(kind, key, value) {
  let text = typeof value === 'object' && value !== null ? JSON.stringify(value) : String(value);
  if (key === 'amount_fen' && Number.isSafeInteger(value)) text = money(value);
  if (key === 'state' && TRANSFER_STATES.includes(value)) text = t(`transfer_status.${value}`);
  if (key === 'via' && TRANSFER_VIAS.includes(value)) text = t(`transfer.via.${value}`);
  const bad = key === 'error' || key === 'fail_reason' || (key === 'reason' && kind !== 'requested');
  const label = TRANSFER_KV.includes(key) ? t(`transfer.kv.${key}`) : key;
  return h('span', { class: `kv${bad ? ' bad' : ''}`, dataset: { key, value: typeof value === 'string' ? value : text }, text: `${label}: ${text}` });
}

// ---------------------------------------------------------------- routing

// Pattern, view, whether it needs a token, nav section, whether operators may use it.
const ROUTES = [
  [/^#\/orders\/([^/?]+)$/, (m) => orderView(decodeURIComponent(m[1])), true, 'orders', true],
  [/^#\/orders(?:\?(.*))?$/, (m) => ordersView(new URLSearchParams(m[1] || '')), true, 'orders', true],
  [/^#\/reconciliation(?:\/(\d{4}-\d{2}-\d{2}))?(?:\?(.*))?$/, (m) => reconciliationView(m[1], new URLSearchParams(m[2] || '')), true, 'reconciliation', true],
  [/^#\/overdue(?:\?(.*))?$/, (m) => overdueView(new URLSearchParams(m[1] || '')), true, 'fulfilment', true],
  [/^#\/unsettled(?:\?(.*))?$/, (m) => unsettledView(new URLSearchParams(m[1] || '')), true, 'fulfilment', true],
  [/^#\/transfers\/new(?:\?(.*))?$/, (m) => transferNewView(new URLSearchParams(m[1] || '')), true, 'transfers', true],
  [/^#\/transfers\/([^/?]+)$/, (m) => transferView(decodeURIComponent(m[1])), true, 'transfers', true],
  [/^#\/transfers(?:\?(.*))?$/, (m) => transfersView(new URLSearchParams(m[1] || '')), true, 'transfers', true],
  [/^#\/stats$/, () => statsView(), true, 'stats', false],
  [/^#\/wxacode$/, () => wxacodeView(), true, 'wxacode', false],
  [/^#\/merchants$/, () => merchantsView(), true, 'merchants', false],
  [/^#\/merchants\/([^/?]+)$/, (m) => merchantView(decodeURIComponent(m[1])), true, 'merchants', false],
  [/^#\/apps$/, () => appsView(), true, 'apps', false],
  [/^#\/apps\/([^/?]+)$/, (m) => appView(decodeURIComponent(m[1])), true, 'apps', false],
  [/^#\/operators$/, () => operatorsView(), true, 'operators', false],
  [/^#\/sandbox$/, () => sandboxView(), false, 'sandbox', false],
];

function render() {
  renderSeq += 1;
  const hash = location.hash || '#/orders';
  const route = ROUTES.find(([pattern]) => pattern.test(hash));
  if (!route) {
    location.hash = '#/orders';
    return;
  }
  const [pattern, show, needsToken, section, forOperators] = route;
  if (isOperator() && !forOperators) {
    location.hash = '#/orders';
    return;
  }
  for (const link of document.querySelectorAll('#nav a[data-view]')) {
    link.classList.toggle('active', link.dataset.view === section);
  }
  if (needsToken && !storedToken()) {
    showLogin();
    return;
  }
  hideLogin();
  refreshAlerts();
  Promise.resolve(show(pattern.exec(hash))).catch((err) => replace(view, errorBox(err)));
}

async function start() {
  translatePage();
  try {
    info = (await request('GET', '/console/info')).body;
  } catch {
    // An older server: the back office still works, without the sandbox pages.
  }
  initRegistry({
    admin,
    describeError,
    errorBox,
    field,
    section,
    table,
    view,
    seq: () => renderSeq,
    render,
  });
  showPrincipal();
  if (storedToken()) await loadPrincipal();
  const mode = document.getElementById('mode');
  const label = () => {
    mode.textContent = `${t(info.sandbox ? 'mode.sandbox' : 'mode.merchant')}${info.api_version ? ` · API ${info.api_version}` : ''}`;
  };
  label();
  bindLanguageSwitch(document.getElementById('lang'), () => {
    label();
    showPrincipal();
    render();
  });
  window.addEventListener('hashchange', render);
  setInterval(refreshAlerts, ALERTS_EVERY_MS);
  render();
}

start();
