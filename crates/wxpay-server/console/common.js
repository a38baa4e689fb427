// Shared by the back office and the emulator: DOM building that never parses markup, money as
// integer fen, times, the JSON client, the language switch.

import { messages } from './i18n.js';

// ---------------------------------------------------------------- DOM

/**
 * An element. Children and `text` become text nodes, never markup, so any value from the
 * server or the user is shown as it is.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = String(value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'href') el.setAttribute('href', safeHref(value));
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

/** The same for SVG elements. */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === 'text') el.textContent = String(value);
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Only links within this origin (hash routes and absolute paths). */
function safeHref(value) {
  const text = String(value);
  return text.startsWith('#') || (text.startsWith('/') && !text.startsWith('//')) ? text : '#';
}

/** Replaces the children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// ---------------------------------------------------------------- money

const FEN_PER_YUAN = 100n;

/**
 * Integer fen as yuan with two decimals ("12.05"), by integer arithmetic only. Anything that
 * is not an integer amount is refused rather than rounded.
 */
export function yuan(fen) {
  let value = typeof fen === 'bigint' ? fen : BigInt(fen);
  const negative = value < 0n;
  if (negative) value = -value;
  const text = `${value / FEN_PER_YUAN}.${(value % FEN_PER_YUAN).toString().padStart(2, '0')}`;
  return negative ? `-${text}` : text;
}

/** `¥12.05`. */
export function money(fen) {
  return `¥${yuan(fen)}`;
}

/**
 * Yuan typed by a person ("12", "12.5", "12.05") as integer fen (BigInt), or null when it is
 * not an amount with at most two decimals.
 */
export function parseYuan(text) {
  const m = /^\s*(\d{1,12})(?:\.(\d{1,2}))?\s*$/.exec(String(text));
  if (!m) return null;
  return BigInt(m[1]) * FEN_PER_YUAN + BigInt((m[2] || '').padEnd(2, '0'));
}

/** Sums `price_fen * quantity` of cart lines exactly. */
export function totalFen(lines) {
  return lines.reduce((sum, l) => sum + BigInt(l.price_fen) * BigInt(l.quantity), 0n);
}

/** A BigInt fen amount as a JSON number (amounts here are far below 2^53). */
export function fenNumber(fen) {
  const n = Number(fen);
  if (!Number.isSafeInteger(n)) throw new RangeError('amount out of range');
  return n;
}

// ---------------------------------------------------------------- time

const pad = (n) => String(n).padStart(2, '0');

/** Unix milliseconds as local `YYYY-MM-DD HH:MM:SS`, or an empty string. */
export function dateTime(ms) {
  if (ms === null || ms === undefined) return '';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Unix milliseconds as local `HH:MM`. */
export function hourMinute(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

const CST_OFFSET_MS = 8 * 3600 * 1000;
const DAY_MS = 24 * 3600 * 1000;

/** The `yyyy-mm-dd` of WeChat's bills (GMT+8), `daysBack` days before now. */
export function cstDate(daysBack = 0) {
  const d = new Date(Date.now() + CST_OFFSET_MS - daysBack * DAY_MS);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------- HTTP

/**
 * An answer that is not 2xx, with the API's `{code, message}`, the same nested as
 * `{error: {code, message}}`, or the simulator's shapes (`errMsg`, `error` as text).
 */
export class HttpError extends Error {
  constructor(status, body) {
    const inner = body && body.error && typeof body.error === 'object' ? body.error : body;
    const text = (value) => (typeof value === 'string' && value ? value : null);
    const message = (inner && (text(inner.message) || text(body.errMsg) || text(body.error))) || `HTTP ${status}`;
    super(message);
    this.status = status;
    this.body = body;
    this.code = inner && inner.code;
  }
}

/**
 * A JSON call to this origin. Resolves to `{status, body}` for 2xx, throws HttpError
 * otherwise. `onExchange` (if given) sees every exchange, for the emulator's log.
 */
export async function request(method, path, { body, token, onExchange } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch (err) {
    const error = new HttpError(0, { message: t('error.network') });
    if (onExchange) onExchange({ method, path, status: 0, request: body, response: null });
    throw error;
  }
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = { message: text.slice(0, 200) };
  }
  if (onExchange) onExchange({ method, path, status: response.status, request: body, response: parsed });
  if (!response.ok) throw new HttpError(response.status, parsed);
  return { status: response.status, body: parsed };
}

// ---------------------------------------------------------------- language

const LANG_KEY = 'wxpay.console.lang';
let lang = (() => {
  try {
    const saved = localStorage.getItem(LANG_KEY);
    return saved === 'en' || saved === 'zh' ? saved : 'zh';
  } catch {
    return 'zh';
  }
})();

export function currentLang() {
  return lang;
}

/** The label `key` in the current language, `{name}` replaced from `vars`. */
export function t(key, vars = {}) {
  const text = (messages[lang] && messages[lang][key]) ?? messages.zh[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (all, name) => (name in vars ? String(vars[name]) : all));
}

/** Labels the static parts of the page (`data-i18n`, `data-i18n-placeholder`, `data-i18n-title`). */
export function translatePage(root = document) {
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-placeholder]')) {
    el.setAttribute('placeholder', t(el.dataset.i18nPlaceholder));
  }
  for (const el of root.querySelectorAll('[data-i18n-title]')) {
    el.setAttribute('title', t(el.dataset.i18nTitle));
  }
  if (document.body && document.body.dataset.titleKey) document.title = t(document.body.dataset.titleKey);
}

/** Switches between Chinese and English, remembers it, relabels, then calls `rerender`. */
export function bindLanguageSwitch(button, rerender) {
  const label = () => {
    button.textContent = lang === 'zh' ? 'English' : '中文';
    button.setAttribute('aria-label', t('lang.switch'));
  };
  label();
  button.addEventListener('click', () => {
    lang = lang === 'zh' ? 'en' : 'zh';
    try {
      localStorage.setItem(LANG_KEY, lang);
    } catch {
      // Private windows may refuse storage; the switch still works for this page.
    }
    translatePage();
    label();
    rerender();
  });
}

/**
 * The label key of an order's status: WeChat's `REFUND` covers any refund, so an order refunded in
 * part is told apart (`REFUND_PARTIAL`) by its amounts.
 */
export function orderStatusKey(order) {
  return order.status === 'REFUND' && order.refunded_fen < order.amount_fen ? 'REFUND_PARTIAL' : order.status;
}

/** An order's status badge (see `orderStatusKey`). */
export function orderStatusBadge(order) {
  const badge = statusBadge(order.status);
  badge.textContent = t(`status.${orderStatusKey(order)}`);
  return badge;
}

/** A status badge (`NOTPAY`, `SUCCESS`, ..., refund states with `prefix` `refund`). */
export function statusBadge(status, prefix = 'status') {
  return h('span', {
    class: `badge badge-${String(status).toLowerCase()}`,
    dataset: { status: String(status) },
    text: t(`${prefix}.${status}`),
  });
}
