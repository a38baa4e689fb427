// The registry in the back office (admin token only): merchants (a provider's sub-merchants
// under it), mini programs and operators, each listed, registered, enabled or disabled, and edited
// (a merchant's name, API version, sp_appid and credentials; a mini program's name, AppSecret,
// merchant and sub-merchant, and its message push's Token and EncodingAESKey; a sub-merchant's
// name, sub_appid and flag). Secrets typed or chosen in a form go to the server and
// nowhere else: never shown back (no answer carries one), never logged, and every credential field
// is cleared after each submit, whatever the answer. An operator's token is shown once.

import { dateTime, h, replace, t } from './common.js';

// What the back office lends: its admin client, its helpers, its navigation counter.
let ctx = null;

/** Called once by the back office with `{admin, describeError, errorBox, field, section, table, view, seq, render}`. */
export function initRegistry(context) {
  ctx = context;
}

// A message kept across the redraw that follows a change.
let flash = null;

function takeFlash() {
  const message = flash;
  flash = null;
  return message ? h('div', { class: `notice ${message.ok ? 'ok' : 'error'}`, id: 'registry-message', role: 'status', text: message.text }) : null;
}

function redraw(text, ok = true) {
  flash = { text, ok };
  ctx.render();
}

function messageLine(id) {
  return h('p', { class: 'form-message', id, role: 'status' });
}

function say(line, text, ok) {
  line.className = `form-message ${ok ? 'ok' : 'error'}`;
  line.textContent = text;
}

function enabledBadge(enabled) {
  return h('span', {
    class: `badge ${enabled ? 'badge-success' : 'badge-closed'}`,
    dataset: { enabled: String(enabled) },
    text: t(enabled ? 'registry.enabled' : 'registry.disabled'),
  });
}

/** A button that PATCHes `{enabled: !enabled}` to `path`, then redraws with a message. */
function toggleButton(path, id, enabled) {
  return h('button', {
    type: 'button',
    class: 'toggle',
    dataset: { toggle: id },
    text: t(enabled ? 'registry.disable' : 'registry.enable'),
    onclick: async (event) => {
      event.currentTarget.disabled = true;
      try {
        await ctx.admin('PATCH', path, { enabled: !enabled });
        redraw(t(enabled ? 'registry.toggled_off' : 'registry.toggled_on', { id }));
      } catch (err) {
        redraw(ctx.describeError(err), false);
      }
    },
  });
}

function head(titleKey, ...extra) {
  return h('div', { class: 'view-head' }, h('h1', { text: t(titleKey) }), ...extra);
}

function refreshButton() {
  return h('button', { type: 'button', text: t('action.refresh'), onclick: () => ctx.render() });
}

function mono(text) {
  return h('span', { class: 'mono', text: text ?? '' });
}

function appLink(appid) {
  return h('a', { href: `#/apps/${encodeURIComponent(appid)}`, class: 'mono', text: appid });
}

// ---------------------------------------------------------------- credential fields

/** A chosen file's content: text, or (binary) base64 from FileReader's data URL. */
function readFile(file, binary) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.addEventListener('load', () => {
      const text = String(reader.result);
      resolve(binary ? text.slice(text.indexOf(',') + 1) : text);
    });
    reader.addEventListener('error', () => reject(new Error(t('registry.file_unreadable', { name: file.name }))));
    if (binary) reader.readAsDataURL(file);
    else reader.readAsText(file);
  });
}

/**
 * One input of a form: `kind` is `text`, `secret` (a password field), `pem` (pasted, or read
 * from a chosen file) or `p12` (a chosen file, sent in base64). `read()` resolves to the value
 * or undefined when left empty; `clear()` empties it.
 */
function input(prefix, name, kind, { label, required = false, value = '', placeholder } = {}) {
  const id = `${prefix}-${name}`;
  let el;
  let file = null;
  if (kind === 'pem') {
    el = h('textarea', { id, name, rows: '3', spellcheck: 'false', autocomplete: 'off', placeholder: placeholder || '-----BEGIN …-----' });
    file = h('input', { type: 'file', id: `${id}-file`, accept: '.pem,.crt,.cer,.key,.txt', 'aria-label': `${label} — ${t('registry.choose_file')}` });
  } else if (kind === 'p12') {
    file = h('input', { type: 'file', id: `${id}-file`, accept: '.p12,.pfx', 'aria-label': label });
  } else {
    el = h('input', {
      id,
      name,
      type: kind === 'secret' ? 'password' : 'text',
      autocomplete: kind === 'secret' ? 'new-password' : 'off',
      spellcheck: 'false',
      required,
      value,
      placeholder,
    });
  }
  const wrap = h('label', { class: `form-field field-${kind}` }, h('span', { text: label }), el,
    file && el ? h('span', { class: 'file-choice' }, h('small', { class: 'muted', text: t('registry.choose_file') }), file) : file);
  return {
    name,
    kind,
    el: wrap,
    async read() {
      if (file && file.files && file.files.length) return readFile(file.files[0], kind === 'p12');
      const text = el ? el.value.trim() : '';
      return text === '' ? undefined : text;
    },
    clear() {
      if (el) el.value = '';
      if (file) file.value = '';
    },
  };
}

function select(id, options, value) {
  return h('select', { id, name: id }, options.map(([v, label]) => h('option', { value: v, selected: v === value, text: label })));
}

function labelled(labelKey, control) {
  return h('label', { class: 'form-field' }, h('span', { text: t(labelKey) }), control);
}

// ---------------------------------------------------------------- merchants

async function loadMerchants() {
  return (await ctx.admin('GET', '/admin/merchants')).body.merchants;
}

function keyFacts(m) {
  return h('div', { class: 'key-facts' },
    h('div', { class: 'mono small', title: t('merchant.serial'), text: m.merchant_serial }),
    m.public_key_id ? h('span', { class: 'kv', text: `${t('merchant.public_key_id')}: ${m.public_key_id}` }) : null,
    m.has_platform_cert ? h('span', { class: 'kv', text: t('merchant.platform_cert') }) : null,
    m.has_p12 ? h('span', { class: 'kv', text: 'p12' }) : null);
}

export async function merchantsView() {
  const seq = ctx.seq();
  const body = h('div', { class: 'loading', text: t('loading') });
  replace(ctx.view, head('nav.merchants', refreshButton()), takeFlash(), body);
  let merchants;
  try {
    merchants = await loadMerchants();
  } catch (err) {
    if (ctx.seq() === seq) replace(body, ctx.errorBox(err));
    return;
  }
  if (ctx.seq() !== seq) return;
  body.className = '';
  const rows = merchants.map((m) => h('tr', { dataset: { mchid: m.mchid, enabled: String(m.enabled) } },
    h('td', {}, h('a', { href: `#/merchants/${encodeURIComponent(m.mchid)}`, class: 'mono', text: m.mchid })),
    h('td', { text: m.name }),
    h('td', { text: t(`merchant.kind.${m.kind}`) }),
    h('td', {}, mono(m.sp_appid || '—')),
    h('td', { text: m.api_version }),
    h('td', {}, enabledBadge(m.enabled)),
    h('td', { text: t(`registry.source.${m.source}`) }),
    h('td', {}, keyFacts(m)),
    h('td', { class: 'num', text: m.app_count }),
    h('td', { class: 'num', text: m.kind === 'provider' ? m.sub_merchant_count : '—' }),
    h('td', {}, toggleButton(`/admin/merchants/${encodeURIComponent(m.mchid)}`, m.mchid, m.enabled))));
  replace(body,
    rows.length
      ? ctx.table([t('merchant.mchid'), t('registry.name'), t('merchant.kind'), 'sp_appid', t('merchant.api_version'), t('registry.state'),
        t('registry.source'), t('merchant.keys'), t('merchant.apps'), t('sub.title'), ''], rows, { id: 'merchants-table' })
      : h('p', { class: 'muted', text: t('registry.none') }),
    ctx.section('merchant.register', merchantForm(null)));
}

/**
 * The merchant form: registers one (`existing` null, POST) or edits an existing one (PATCH with
 * what changed only: its name, API version, a provider's sp_appid, and credentials replaced by
 * the fields filled in; `null` removes the platform certificate). A provider's `sp_appid` is
 * asked for only when the kind is `provider`.
 */
function merchantForm(existing) {
  const prefix = existing ? 'mp' : 'm';
  const patch = Boolean(existing);
  // The merchant file's merchant keeps its credentials in the file: its name and API version only.
  const withCredentials = !patch || existing.source === 'registered';
  const texts = [];
  const mchid = patch ? null : input(prefix, 'mchid', 'text', { label: t('merchant.mchid'), required: true });
  const name = input(prefix, 'name', 'text', { label: t('registry.name'), required: !patch, value: existing ? existing.name : '' });
  const kind = patch ? null : select(`${prefix}-kind`, [['direct', t('merchant.kind.direct')], ['provider', t('merchant.kind.provider')]], 'direct');
  const spAppid = input(prefix, 'sp_appid', 'text', {
    label: t('merchant.sp_appid'),
    value: existing && existing.sp_appid ? existing.sp_appid : '',
    placeholder: 'wx…',
  });
  spAppid.el.append(h('small', { class: 'muted', text: t('merchant.sp_appid_help') }));
  const isProvider = () => (patch ? existing.kind === 'provider' : kind.value === 'provider');
  const showSpAppid = () => {
    spAppid.el.hidden = !isProvider();
  };
  if (kind) kind.addEventListener('change', showSpAppid);
  showSpAppid();
  const version = select(`${prefix}-api_version`, [['v3', 'v3'], ['v2', 'v2']], existing ? existing.api_version : 'v3');
  const serial = input(prefix, 'merchant_serial', 'text', {
    label: t('merchant.serial'),
    required: !patch,
    placeholder: existing ? existing.merchant_serial : '',
  });
  const secrets = !withCredentials ? [] : [
    input(prefix, 'api_v2_key', 'secret', { label: t('merchant.api_v2_key'), required: !patch }),
    input(prefix, 'api_v3_key', 'secret', { label: t('merchant.api_v3_key'), required: !patch }),
    input(prefix, 'apiclient_key', 'pem', { label: t('merchant.apiclient_key'), placeholder: '-----BEGIN PRIVATE KEY-----' }),
    input(prefix, 'apiclient_cert', 'pem', { label: t('merchant.apiclient_cert'), placeholder: '-----BEGIN CERTIFICATE-----' }),
    input(prefix, 'apiclient_cert_p12', 'p12', { label: t('merchant.apiclient_cert_p12') }),
    input(prefix, 'platform_cert', 'pem', { label: t('merchant.platform_cert_pem'), placeholder: '-----BEGIN CERTIFICATE-----' }),
    input(prefix, 'wechatpay_public_key', 'pem', { label: t('merchant.public_key'), placeholder: '-----BEGIN PUBLIC KEY-----' }),
  ];
  const keyId = input(prefix, 'wechatpay_public_key_id', 'text', {
    label: t('merchant.public_key_id_input'),
    placeholder: existing && existing.public_key_id ? existing.public_key_id : 'PUB_KEY_ID_…',
  });
  texts.push(name);
  if (withCredentials) texts.push(serial, keyId);
  if (mchid) texts.unshift(mchid);
  const removePlatform = withCredentials && patch && existing.has_platform_cert ? h('input', { type: 'checkbox', id: `${prefix}-remove_platform_cert` }) : null;
  const message = messageLine(`${prefix}-message`);
  const submit = h('button', { type: 'submit', class: 'primary', text: t(patch ? 'merchant.save' : 'merchant.register') });
  const form = h('form', { class: 'registry-form', id: patch ? 'merchant-patch-form' : 'merchant-form', autocomplete: 'off' },
    h('p', { class: 'muted form-wide', id: withCredentials ? null : 'merchant-file-source', text: t(!withCredentials ? 'merchant.file_source' : patch ? 'merchant.rotate_help' : 'registry.secret_note') }),
    mchid ? mchid.el : null,
    name.el,
    kind ? labelled('merchant.kind', kind) : null,
    patch && !isProvider() ? null : spAppid.el,
    labelled('merchant.api_version', version),
    withCredentials ? serial.el : null,
    secrets.slice(0, 2).map((s) => s.el),
    withCredentials ? h('div', { class: 'form-wide pem-grid' }, secrets.slice(2).map((s) => s.el), keyId.el) : null,
    removePlatform ? h('label', { class: 'check form-wide' }, removePlatform, h('span', { text: t('merchant.remove_platform_cert') })) : null,
    h('div', { class: 'buttons form-wide' }, submit),
    message);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    const body = {};
    try {
      for (const field of [...texts, ...secrets]) {
        const value = await field.read();
        if (value !== undefined) body[field.name] = value;
      }
      if (kind) body.kind = kind.value;
      if (!patch || version.value !== existing.api_version) body.api_version = version.value;
      if (patch && body.name === existing.name) delete body.name;
      // sp_appid: a provider's only (the server refuses it for a direct merchant), and in a
      // PATCH only when changed.
      if (isProvider()) {
        const value = await spAppid.read();
        if (value !== undefined && !(patch && value === existing.sp_appid)) body.sp_appid = value;
      }
      if (removePlatform && removePlatform.checked && body.platform_cert === undefined) body.platform_cert = null;
    } catch (err) {
      clearSecrets();
      say(message, ctx.describeError(err), false);
      submit.disabled = false;
      return;
    }
    // The secrets are in `body` only until the request is sent; the fields are emptied now.
    clearSecrets();
    if (patch && Object.keys(body).length === 0) {
      say(message, t('merchant.nothing'), false);
      submit.disabled = false;
      return;
    }
    try {
      if (patch) {
        await ctx.admin('PATCH', `/admin/merchants/${encodeURIComponent(existing.mchid)}`, body);
        redraw(t('merchant.rotated', { mchid: existing.mchid }));
      } else {
        const made = (await ctx.admin('POST', '/admin/merchants', body)).body;
        redraw(t('merchant.registered', { mchid: made.mchid }));
      }
    } catch (err) {
      say(message, ctx.describeError(err), false);
    } finally {
      submit.disabled = false;
    }
  });
  function clearSecrets() {
    for (const s of secrets) s.clear();
    if (removePlatform) removePlatform.checked = false;
  }
  return form;
}

export async function merchantView(mchid) {
  const seq = ctx.seq();
  const holder = h('div', { class: 'loading', text: t('loading') });
  replace(ctx.view,
    h('div', { class: 'view-head' }, h('a', { href: '#/merchants', class: 'back', text: t('action.back') }), h('h1', { class: 'mono', text: mchid })),
    takeFlash(),
    holder);
  let m;
  try {
    m = (await ctx.admin('GET', `/admin/merchants/${encodeURIComponent(mchid)}`)).body;
  } catch (err) {
    if (ctx.seq() === seq) replace(holder, ctx.errorBox(err));
    return;
  }
  if (ctx.seq() !== seq) return;
  holder.className = '';
  const path = `/admin/merchants/${encodeURIComponent(m.mchid)}`;
  const summary = h('dl', { class: 'fields', id: 'merchant-summary', dataset: { mchid: m.mchid, enabled: String(m.enabled) } },
    ctx.field(t('registry.name'), m.name),
    ctx.field(t('merchant.kind'), t(`merchant.kind.${m.kind}`)),
    ctx.field('sp_appid', mono(m.sp_appid || '—'), { dataset: { field: 'sp_appid' } }),
    ctx.field(t('merchant.api_version'), m.api_version),
    ctx.field(t('registry.state'), h('span', {}, enabledBadge(m.enabled), ' ', toggleButton(path, m.mchid, m.enabled))),
    ctx.field(t('registry.source'), t(`registry.source.${m.source}`)),
    ctx.field(t('merchant.serial'), mono(m.merchant_serial)),
    ctx.field(t('merchant.public_key_id'), mono(m.public_key_id || '—')),
    ctx.field(t('merchant.platform_cert'), t(m.has_platform_cert ? 'registry.yes' : 'registry.no')),
    ctx.field('apiclient_cert.p12', t(m.has_p12 ? 'registry.yes' : 'registry.no')),
    ctx.field(t('registry.created'), dateTime(m.created_at)),
    ctx.field(t('registry.updated'), dateTime(m.updated_at)));
  const apps = m.apps.length
    ? ctx.table([t('app.appid'), t('registry.name'), t('app.sub_mchid_col'), t('registry.state')], m.apps.map((a) => h('tr', { dataset: { appid: a.appid } },
      h('td', {}, appLink(a.appid)), h('td', { text: a.name }), h('td', {}, mono(a.sub_mchid || '')), h('td', {}, enabledBadge(a.enabled)))), { id: 'merchant-apps' })
    : h('p', { class: 'muted', text: t('registry.none') });
  replace(holder,
    ctx.section('merchant.summary', summary),
    ctx.section('nav.apps', apps),
    m.kind === 'provider' ? ctx.section('sub.title', subMerchants(m)) : null,
    ctx.section('merchant.edit', merchantForm(m)));
}

function subMerchants(m) {
  const base = `/admin/merchants/${encodeURIComponent(m.mchid)}/sub-merchants`;
  const edit = subMerchantEditForm(base);
  const rows = m.sub_merchants.map((s) => h('tr', { dataset: { subMchid: s.sub_mchid, enabled: String(s.enabled) } },
    h('td', {}, mono(s.sub_mchid)),
    h('td', { text: s.name }),
    h('td', {}, mono(s.sub_appid || '')),
    h('td', {}, enabledBadge(s.enabled)),
    h('td', { text: dateTime(s.created_at) }),
    h('td', { class: 'buttons' },
      toggleButton(`${base}/${encodeURIComponent(s.sub_mchid)}`, s.sub_mchid, s.enabled),
      h('button', { type: 'button', class: 'edit', dataset: { edit: s.sub_mchid }, text: t('registry.edit'), onclick: () => edit.open(s) }))));
  const subMchid = input('sub', 'sub_mchid', 'text', { label: t('sub.mchid'), required: true });
  const name = input('sub', 'name', 'text', { label: t('registry.name'), required: true });
  const subAppid = input('sub', 'sub_appid', 'text', { label: t('sub.appid') });
  const message = messageLine('sub-message');
  const form = h('form', { class: 'inline-form', id: 'sub-merchant-form' }, subMchid.el, name.el, subAppid.el,
    h('button', { type: 'submit', class: 'primary', text: t('sub.add') }), message);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = {};
    for (const f of [subMchid, name, subAppid]) {
      const value = await f.read();
      if (value !== undefined) body[f.name] = value;
    }
    try {
      await ctx.admin('POST', base, body);
      redraw(t('sub.added', { id: body.sub_mchid }));
    } catch (err) {
      say(message, ctx.describeError(err), false);
    }
  });
  return h('div', {},
    rows.length
      ? ctx.table([t('sub.mchid'), t('registry.name'), t('sub.appid_col'), t('registry.state'), t('registry.created'), ''], rows, { id: 'sub-merchants-table' })
      : h('p', { class: 'muted', text: t('registry.none') }),
    edit.form,
    form);
}

/**
 * The form editing one sub-merchant (name, sub_appid, enabled), hidden until a row's "edit"
 * opens it; PATCHes what changed (an emptied sub_appid is `null`: none).
 */
function subMerchantEditForm(base) {
  let current = null;
  const title = h('strong', { class: 'form-wide mono', id: 'se-title' });
  const name = input('se', 'name', 'text', { label: t('registry.name'), required: true });
  const subAppid = input('se', 'sub_appid', 'text', { label: t('sub.appid') });
  const enabled = h('input', { type: 'checkbox', id: 'se-enabled', name: 'enabled' });
  const message = messageLine('se-message');
  const submit = h('button', { type: 'submit', class: 'primary', text: t('action.save') });
  const cancel = h('button', { type: 'button', id: 'se-cancel', text: t('action.cancel') });
  const form = h('form', { class: 'registry-form edit-form', id: 'sub-edit-form', hidden: true, autocomplete: 'off' },
    h('div', { class: 'form-wide' }, h('span', { class: 'muted', text: `${t('sub.edit')} ` }), title),
    name.el, subAppid.el,
    h('label', { class: 'check' }, enabled, h('span', { text: t('registry.enabled') })),
    h('div', { class: 'buttons form-wide' }, submit, cancel),
    message);
  const inputOf = (field) => field.el.querySelector('input');
  cancel.addEventListener('click', () => {
    form.hidden = true;
    current = null;
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!current) return;
    const body = {};
    const newName = await name.read();
    if (newName !== undefined && newName !== current.name) body.name = newName;
    const newAppid = (await subAppid.read()) ?? null;
    if (newAppid !== (current.sub_appid ?? null)) body.sub_appid = newAppid;
    if (enabled.checked !== current.enabled) body.enabled = enabled.checked;
    if (Object.keys(body).length === 0) {
      say(message, t('merchant.nothing'), false);
      return;
    }
    submit.disabled = true;
    try {
      await ctx.admin('PATCH', `${base}/${encodeURIComponent(current.sub_mchid)}`, body);
      redraw(t('sub.updated', { id: current.sub_mchid }));
    } catch (err) {
      say(message, ctx.describeError(err), false);
    } finally {
      submit.disabled = false;
    }
  });
  return {
    form,
    open(s) {
      current = s;
      form.dataset.subMchid = s.sub_mchid;
      title.textContent = s.sub_mchid;
      inputOf(name).value = s.name;
      inputOf(subAppid).value = s.sub_appid || '';
      enabled.checked = s.enabled;
      message.textContent = '';
      message.className = 'form-message';
      form.hidden = false;
      inputOf(name).focus();
    },
  };
}

// ---------------------------------------------------------------- mini programs

export async function appsView() {
  const seq = ctx.seq();
  const body = h('div', { class: 'loading', text: t('loading') });
  replace(ctx.view, head('nav.apps', refreshButton()), takeFlash(), body);
  let apps;
  let merchants;
  try {
    [apps, merchants] = await Promise.all([
      ctx.admin('GET', '/admin/apps').then((a) => a.body.apps),
      loadMerchants(),
    ]);
  } catch (err) {
    if (ctx.seq() === seq) replace(body, ctx.errorBox(err));
    return;
  }
  if (ctx.seq() !== seq) return;
  body.className = '';
  const rows = apps.map((a) => h('tr', { dataset: { appid: a.appid, mchid: a.mchid, enabled: String(a.enabled) } },
    h('td', {}, appLink(a.appid)),
    h('td', { text: a.name }),
    h('td', {}, h('a', { href: `#/merchants/${encodeURIComponent(a.mchid)}`, class: 'mono', text: a.mchid })),
    h('td', {}, mono(a.sub_mchid || '')),
    h('td', {}, enabledBadge(a.enabled)),
    h('td', { text: t(`registry.source.${a.source}`) }),
    h('td', { text: a.has_app_secret ? t('app.secret_stored') : '—' }),
    h('td', { dataset: { hasPush: String(Boolean(a.has_push)) }, text: a.has_push ? t('push.set') : '—' }),
    h('td', { text: dateTime(a.created_at) }),
    h('td', {}, toggleButton(`/admin/apps/${encodeURIComponent(a.appid)}`, a.appid, a.enabled))));
  replace(body,
    rows.length
      ? ctx.table([t('app.appid'), t('registry.name'), t('order.merchant'), t('app.sub_mchid_col'), t('registry.state'), t('registry.source'),
        'AppSecret', t('push.title'), t('registry.created'), ''], rows, { id: 'apps-table' })
      : h('p', { class: 'muted', text: t('registry.none') }),
    ctx.section('app.register', appForm(merchants)));
}

function appForm(merchants) {
  const appid = input('a', 'appid', 'text', { label: t('app.appid'), required: true, placeholder: 'wx…' });
  const name = input('a', 'name', 'text', { label: t('registry.name'), required: true });
  const secret = input('a', 'app_secret', 'secret', { label: 'AppSecret', required: true });
  const mchid = select('a-mchid', merchants.map((m) => [m.mchid, `${m.mchid} · ${m.name}`]), merchants.length ? merchants[0].mchid : '');
  const subMchid = select('a-sub_mchid', [['', t('app.no_sub')]], '');
  const subLabel = labelled('app.sub_mchid', subMchid);
  // A provider's mini program may pay through one of its sub-merchants.
  const fillSubs = async () => {
    const m = merchants.find((x) => x.mchid === mchid.value);
    replace(subMchid, h('option', { value: '', text: t('app.no_sub') }));
    subLabel.hidden = !m || m.kind !== 'provider';
    if (subLabel.hidden) return;
    try {
      const subs = (await ctx.admin('GET', `/admin/merchants/${encodeURIComponent(m.mchid)}/sub-merchants`)).body.sub_merchants;
      for (const s of subs) subMchid.append(h('option', { value: s.sub_mchid, text: `${s.sub_mchid} · ${s.name}` }));
    } catch (err) {
      say(message, ctx.describeError(err), false);
    }
  };
  mchid.addEventListener('change', fillSubs);
  const message = messageLine('a-message');
  const submit = h('button', { type: 'submit', class: 'primary', text: t('app.register') });
  const form = h('form', { class: 'registry-form', id: 'app-form', autocomplete: 'off' },
    h('p', { class: 'muted form-wide', text: t('registry.secret_note') }),
    appid.el, name.el, secret.el, labelled('app.merchant', mchid), subLabel,
    h('div', { class: 'buttons form-wide' }, submit), message);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    const body = { appid: await appid.read(), name: await name.read(), app_secret: await secret.read(), mchid: mchid.value };
    secret.clear();
    if (subMchid.value) body.sub_mchid = subMchid.value;
    try {
      await ctx.admin('POST', '/admin/apps', body);
      redraw(t('app.registered', { appid: body.appid }));
    } catch (err) {
      say(message, ctx.describeError(err), false);
    } finally {
      submit.disabled = false;
    }
  });
  fillSubs();
  return form;
}

/** One mini program: what it is, and the form that edits it. */
export async function appView(appid) {
  const seq = ctx.seq();
  const holder = h('div', { class: 'loading', text: t('loading') });
  replace(ctx.view,
    h('div', { class: 'view-head' }, h('a', { href: '#/apps', class: 'back', text: t('action.back') }), h('h1', { class: 'mono', text: appid })),
    takeFlash(),
    holder);
  let a;
  let merchants;
  try {
    [a, merchants] = await Promise.all([
      ctx.admin('GET', `/admin/apps/${encodeURIComponent(appid)}`).then((x) => x.body),
      loadMerchants(),
    ]);
  } catch (err) {
    if (ctx.seq() === seq) replace(holder, ctx.errorBox(err));
    return;
  }
  if (ctx.seq() !== seq) return;
  holder.className = '';
  const summary = h('dl', { class: 'fields', id: 'app-summary', dataset: { appid: a.appid, mchid: a.mchid, enabled: String(a.enabled) } },
    ctx.field(t('registry.name'), a.name, { dataset: { field: 'name' } }),
    ctx.field(t('app.merchant'), h('a', { href: `#/merchants/${encodeURIComponent(a.mchid)}`, class: 'mono', text: a.mchid }), { dataset: { field: 'mchid' } }),
    ctx.field(t('app.sub_mchid_col'), mono(a.sub_mchid || '—'), { dataset: { field: 'sub_mchid' } }),
    ctx.field(t('registry.state'), h('span', {}, enabledBadge(a.enabled), ' ', toggleButton(`/admin/apps/${encodeURIComponent(a.appid)}`, a.appid, a.enabled))),
    ctx.field(t('registry.source'), t(`registry.source.${a.source}`)),
    ctx.field('AppSecret', a.has_app_secret ? t('app.secret_stored') : '—'),
    ctx.field(t('registry.created'), dateTime(a.created_at)),
    ctx.field(t('registry.updated'), dateTime(a.updated_at)));
  replace(holder,
    ctx.section('app.summary', summary),
    ctx.section('app.edit', appEditForm(a, merchants)),
    pushSection(a));
}

/**
 * The form editing a mini program: its name, a new AppSecret (write-only: empty means unchanged;
 * never shown, cleared once read), and the merchant and sub-merchant it pays through (a
 * provider's sub-merchants once the provider is chosen; none for a direct merchant). Only what
 * changed is sent. The merchant file's mini program: its name only.
 */
function appEditForm(a, merchants) {
  const fromFile = a.source !== 'registered';
  const name = input('ae', 'name', 'text', { label: t('registry.name'), required: true, value: a.name });
  const secret = input('ae', 'app_secret', 'secret', { label: t('app.new_secret'), placeholder: t('app.secret_unchanged') });
  // The current merchant is offered even when the list does not have it (not expected).
  const choices = merchants.map((m) => [m.mchid, `${m.mchid} · ${m.name}`]);
  if (!merchants.some((m) => m.mchid === a.mchid)) choices.unshift([a.mchid, a.mchid]);
  const mchid = select('ae-mchid', choices, a.mchid);
  const subMchid = select('ae-sub_mchid', [['', t('app.no_sub')]], '');
  const subLabel = labelled('app.sub_mchid_edit', subMchid);
  const message = messageLine('ae-message');
  let filling = 0;
  const fillSubs = async () => {
    const fill = ++filling;
    const m = merchants.find((x) => x.mchid === mchid.value);
    replace(subMchid, h('option', { value: '', text: t('app.no_sub') }));
    subMchid.disabled = fromFile;
    submit.disabled = false;
    subLabel.hidden = !m || m.kind !== 'provider';
    if (subLabel.hidden) return;
    // Until the provider's sub-merchants are in, the choice (and so the form) waits.
    subMchid.disabled = true;
    submit.disabled = true;
    try {
      const subs = (await ctx.admin('GET', `/admin/merchants/${encodeURIComponent(m.mchid)}/sub-merchants`)).body.sub_merchants;
      if (fill !== filling) return;
      for (const s of subs) {
        subMchid.append(h('option', {
          value: s.sub_mchid,
          selected: m.mchid === a.mchid && s.sub_mchid === a.sub_mchid,
          text: `${s.sub_mchid} · ${s.name}${s.enabled ? '' : ` (${t('registry.disabled')})`}`,
        }));
      }
    } catch (err) {
      say(message, ctx.describeError(err), false);
    } finally {
      if (fill === filling) {
        subMchid.disabled = fromFile;
        submit.disabled = false;
      }
    }
  };
  mchid.addEventListener('change', fillSubs);
  if (fromFile) {
    mchid.disabled = true;
    subMchid.disabled = true;
  }
  const submit = h('button', { type: 'submit', class: 'primary', text: t('action.save') });
  const form = h('form', { class: 'registry-form', id: 'app-edit-form', autocomplete: 'off', dataset: { appid: a.appid } },
    h('p', { class: 'muted form-wide', text: t(fromFile ? 'app.file_source' : 'app.edit_help') }),
    name.el,
    fromFile ? null : secret.el,
    labelled('app.merchant', mchid),
    subLabel,
    h('div', { class: 'buttons form-wide' }, submit),
    message);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = {};
    const newName = await name.read();
    if (newName !== undefined && newName !== a.name) body.name = newName;
    const newSecret = fromFile ? undefined : await secret.read();
    // The AppSecret is in `body` only until the request is sent; the field is emptied now.
    secret.clear();
    if (newSecret !== undefined) body.app_secret = newSecret;
    if (!fromFile) {
      const sub = subLabel.hidden || !subMchid.value ? null : subMchid.value;
      // A new merchant always names its sub-merchant (or none), so that moving from a provider
      // to a direct merchant drops the provider's sub-merchant.
      if (mchid.value !== a.mchid) {
        body.mchid = mchid.value;
        body.sub_mchid = sub;
      } else if (sub !== (a.sub_mchid ?? null)) {
        body.sub_mchid = sub;
      }
    }
    if (Object.keys(body).length === 0) {
      say(message, t('merchant.nothing'), false);
      return;
    }
    submit.disabled = true;
    try {
      await ctx.admin('PATCH', `/admin/apps/${encodeURIComponent(a.appid)}`, body);
      redraw(t('app.updated', { appid: a.appid }));
    } catch (err) {
      say(message, ctx.describeError(err), false);
    } finally {
      submit.disabled = false;
    }
  });
  fillSubs();
  return form;
}

// ---------------------------------------------------------------- message push

/** The URL WeChat's admin console is given for this mini program's message push. */
function pushUrl(appid) {
  return `${location.origin}/notify/mp/${encodeURIComponent(appid)}`;
}

/**
 * The mini program's message push (消息推送), the merchant file's one too: whether it is set, the
 * URL to paste into WeChat's admin console (with a copy button), and the form that sets the Token
 * and EncodingAESKey (write-only: never shown, cleared once read, whatever the answer) with the
 * mode (encrypted with the key, or plaintext without), or removes them.
 */
function pushSection(a) {
  const path = `/admin/apps/${encodeURIComponent(a.appid)}`;
  const url = h('code', { class: 'mono token-value', id: 'push-url', text: pushUrl(a.appid) });
  const copyStatus = h('span', { class: 'form-message', id: 'push-url-status', role: 'status' });
  const state = h('span', {
    class: `badge ${a.has_push ? 'badge-success' : 'badge-closed'}`,
    id: 'push-state',
    dataset: { hasPush: String(Boolean(a.has_push)) },
    text: t(a.has_push ? 'push.set' : 'push.unset'),
  });
  // Not `required`: an empty Token is said beside the form, like the API's refusals.
  const token = input('push', 'token', 'secret', { label: 'Token', placeholder: t('push.token_hint') });
  const key = input('push', 'encoding_aes_key', 'secret', { label: 'EncodingAESKey', placeholder: t('push.key_hint') });
  const mode = (value, labelKey, checked) => h('label', { class: 'check' },
    h('input', { type: 'radio', name: 'push-mode', id: `push-mode-${value}`, value, checked }),
    h('span', { text: t(labelKey) }));
  const encrypted = mode('encrypted', 'push.mode_encrypted', true);
  const plaintext = mode('plaintext', 'push.mode_plaintext', false);
  const isPlaintext = () => plaintext.querySelector('input').checked;
  const showKey = () => {
    key.el.hidden = isPlaintext();
  };
  for (const choice of [encrypted, plaintext]) choice.querySelector('input').addEventListener('change', showKey);
  const message = messageLine('push-message');
  const submit = h('button', { type: 'submit', class: 'primary', text: t('action.save') });
  const remove = a.has_push ? h('button', { type: 'button', id: 'push-remove', text: t('push.remove') }) : null;
  const form = h('form', { class: 'registry-form', id: 'push-form', autocomplete: 'off', dataset: { appid: a.appid } },
    h('p', { class: 'muted form-wide', text: t('push.form_help') }),
    h('div', { class: 'form-wide push-modes', role: 'radiogroup', 'aria-label': t('push.mode') },
      h('span', { class: 'muted small', text: t('push.mode') }), encrypted, plaintext),
    token.el,
    key.el,
    h('div', { class: 'buttons form-wide' }, submit, remove),
    message);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = { push_token: await token.read(), push_encoding_aes_key: isPlaintext() ? null : await key.read() };
    // The Token and the key are in `body` only until the request is sent; the fields are emptied now.
    token.clear();
    key.clear();
    if (body.push_token === undefined) {
      say(message, t('push.token_required'), false);
      return;
    }
    if (body.push_encoding_aes_key === undefined) {
      say(message, t('push.key_required'), false);
      return;
    }
    submit.disabled = true;
    try {
      await ctx.admin('PATCH', path, body);
      redraw(t('push.saved', { appid: a.appid }));
    } catch (err) {
      say(message, ctx.describeError(err), false);
    } finally {
      submit.disabled = false;
    }
  });
  if (remove) {
    remove.addEventListener('click', async () => {
      if (!window.confirm(t('push.remove_confirm', { appid: a.appid }))) return;
      token.clear();
      key.clear();
      remove.disabled = true;
      try {
        await ctx.admin('PATCH', path, { push_token: null });
        redraw(t('push.removed', { appid: a.appid }));
      } catch (err) {
        say(message, ctx.describeError(err), false);
      } finally {
        remove.disabled = false;
      }
    });
  }
  showKey();
  return h('section', { class: 'card', id: 'push' },
    h('h2', { text: t('push.title') }),
    h('dl', { class: 'fields' },
      ctx.field(t('push.state'), state, { dataset: { field: 'has_push' } })),
    h('p', { class: 'muted', text: t('push.url_help') }),
    h('div', { class: 'token-line' }, url, copyButton('push-url-copy', url, copyStatus, { label: 'push.copy', failed: 'push.copy_failed' })),
    copyStatus,
    form);
}

/** A button that copies the text of `target`, saying so in `status` (or selects it to copy by hand). */
function copyButton(id, target, status, { label, failed }) {
  const button = h('button', { type: 'button', id, text: t(label) });
  button.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(target.textContent);
      say(status, t('operator.copied'), true);
    } catch {
      // No clipboard (an insecure origin, or refused): the text is selected to copy by hand.
      const range = document.createRange();
      range.selectNodeContents(target);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      say(status, t(failed), false);
    }
  });
  return button;
}

// ---------------------------------------------------------------- operators

export async function operatorsView() {
  const seq = ctx.seq();
  const body = h('div', { class: 'loading', text: t('loading') });
  const created = h('div', { id: 'operator-created' });
  replace(ctx.view, head('nav.operators', refreshButton()), takeFlash(), h('p', { class: 'muted', text: t('operator.help') }), created, body);
  let merchants;
  try {
    merchants = await loadMerchants();
  } catch (err) {
    if (ctx.seq() === seq) replace(body, ctx.errorBox(err));
    return;
  }
  if (ctx.seq() !== seq) return;
  body.className = '';
  const list = h('div', { id: 'operators' });
  const reload = async () => {
    try {
      const operators = (await ctx.admin('GET', '/admin/operators')).body.operators;
      if (ctx.seq() === seq) replace(list, operatorTable(operators, reload));
    } catch (err) {
      if (ctx.seq() === seq) replace(list, ctx.errorBox(err));
    }
  };
  replace(body, ctx.section('operator.create', operatorForm(merchants, created, reload)), ctx.section('nav.operators', list));
  await reload();
}

function operatorForm(merchants, created, reload) {
  const mchid = select('o-mchid', merchants.map((m) => [m.mchid, `${m.mchid} · ${m.name}`]), merchants.length ? merchants[0].mchid : '');
  const name = input('o', 'name', 'text', { label: t('registry.name'), required: true });
  const message = messageLine('o-message');
  const form = h('form', { class: 'inline-form', id: 'operator-form' }, labelled('app.merchant', mchid), name.el,
    h('button', { type: 'submit', class: 'primary', text: t('operator.create') }), message);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const made = (await ctx.admin('POST', '/admin/operators', { mchid: mchid.value, name: await name.read() })).body;
      name.clear();
      message.textContent = '';
      replace(created, tokenOnce(made));
      reload();
    } catch (err) {
      say(message, ctx.describeError(err), false);
    }
  });
  return form;
}

/** The new operator's token, shown this once, with a copy button and a warning. */
function tokenOnce(made) {
  const value = h('code', { class: 'mono token-value', id: 'operator-token', text: made.token });
  const status = h('span', { class: 'form-message', id: 'copy-status', role: 'status' });
  const copy = copyButton('copy-token', value, status, { label: 'operator.copy', failed: 'operator.copy_failed' });
  const dismiss = h('button', { type: 'button', class: 'link', id: 'token-dismiss', text: t('operator.dismiss') });
  const box = h('div', { class: 'notice token-once', role: 'alert', dataset: { operator: made.id, mchid: made.mchid } },
    h('strong', { text: t('operator.token_once', { name: made.name, mchid: made.mchid }) }),
    h('div', { class: 'token-line' }, value, copy, dismiss),
    status);
  dismiss.addEventListener('click', () => box.remove());
  return box;
}

function operatorTable(operators, reload) {
  if (!operators.length) return h('p', { class: 'muted', text: t('registry.none') });
  const rows = operators.map((o) => {
    const revoke = o.revoked_at ? null : h('button', {
      type: 'button',
      class: 'revoke',
      text: t('operator.revoke'),
      onclick: async (event) => {
        if (!window.confirm(t('operator.revoke_confirm', { name: o.name }))) return;
        event.currentTarget.disabled = true;
        try {
          await ctx.admin('DELETE', `/admin/operators/${encodeURIComponent(o.id)}`);
        } catch (err) {
          redraw(ctx.describeError(err), false);
          return;
        }
        reload();
      },
    });
    return h('tr', { dataset: { operator: o.id, mchid: o.mchid, revoked: String(Boolean(o.revoked_at)) } },
      h('td', {}, mono(o.id)),
      h('td', { text: o.name }),
      h('td', {}, mono(o.mchid)),
      h('td', { text: dateTime(o.created_at) }),
      h('td', {}, o.revoked_at
        ? h('span', { class: 'badge badge-closed', text: t('operator.revoked', { at: dateTime(o.revoked_at) }) })
        : h('span', { class: 'badge badge-success', text: t('operator.active') })),
      h('td', {}, revoke));
  });
  return ctx.table(['ID', t('registry.name'), t('order.merchant'), t('registry.created'), t('registry.state'), ''], rows, { id: 'operators-table' });
}
