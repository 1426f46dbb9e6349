// Baton's fleet page. Reads the fleet live from GET /v1/stream (server-sent events read
// with fetch(), which, unlike EventSource, can send the bearer token in a header), the
// upgrades' past events from GET /v1/upgrades/{id}/events, and calls the pause, resume and
// abort routes. The token is kept in this tab's sessionStorage (this origin only) and
// only ever sent in an Authorization header to this server. No HTML is built from text:
// every text goes in through textContent.
'use strict';

const TOKEN_KEY = 'baton.token';
/** Hosts above which zones start folded (their summaries stay). */
const FOLD_ABOVE = 200;
/** Events shown in a timeline. */
const TIMELINE = 200;
/** A stream silent for this long (keep-alives come every 15 s) is taken as dead. */
const SILENCE_MS = 40000;
const MAX_RETRY_MS = 15000;

const STATES = ['Failed', 'RolledBack', 'Updating', 'Rebooting', 'Verifying', 'Downloading',
  'Downloaded', 'Idle', 'Done', 'Unknown'];
const OUTCOMES = ['Succeeded', 'Failed', 'Skipped', 'Dispatched', 'Held', 'Downloaded', 'Pending'];
const TERMINAL = new Set(['Succeeded', 'Failed', 'Aborted']);

const state = {
  token: null,
  hosts: new Map(), // id -> HostInfo
  upgrades: new Map(), // id -> UpgradeInfo
  events: new Map(), // upgrade id -> Map(seq -> event)
  server: null, // {replica, version}
  chosen: null, // the upgrade picked in the list, if any
  filter: '',
  problems: false,
  zones: new Map(), // zone -> open (the user's choice)
  route: { view: 'fleet' },
  snapshots: 0,
};

const conn = { ctrl: null, retry: 2000, attempt: 0, lastData: 0, timer: null, live: false };
const dirty = { upgrade: true, fleet: true, host: true };
let frame = 0;

// ---------------------------------------------------------------- small helpers

const $ = (id) => document.getElementById(id);

/** An element: attrs (class, text, title, href, data-*, on<event>), then children. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'hidden') el.hidden = true;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const lower = (s) => String(s || '').toLowerCase();

function ago(ts) {
  const t = Date.parse(ts);
  if (!ts || Number.isNaN(t)) return '';
  return duration(Math.max(0, Date.now() - t));
}

function duration(ms) {
  let s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60); s %= 60;
  if (m < 60) return `${m}m ${s}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

function clock(ts) {
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? String(ts || '') : d.toLocaleTimeString([], { hour12: false });
}

function when(ts) {
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? String(ts || '') : d.toLocaleString([], { hour12: false });
}

function schedule(...parts) {
  for (const p of parts) dirty[p] = true;
  if (!frame) frame = requestAnimationFrame(render);
}

function notice(text, kind) {
  const el = $('notice');
  el.textContent = text || '';
  el.className = `notice ${kind || ''}`;
  el.hidden = !text;
}

// ---------------------------------------------------------------- the API

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, {
    method, headers, cache: 'no-store', credentials: 'omit',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let json = null;
  try { json = await resp.json(); } catch (_) { /* not JSON */ }
  if (resp.status === 401) signOut(json && json.error);
  return { ok: resp.ok, status: resp.status, json, link: resp.headers.get('Link') };
}

/** The next page's path from a Link header. */
function nextPage(link) {
  const m = /<([^>]+)>;\s*rel="next"/.exec(link || '');
  return m && m[1].startsWith('/') ? m[1] : null;
}

async function loadEvents(id) {
  let path = `/v1/upgrades/${encodeURIComponent(id)}/events`;
  const seen = state.events.get(id) || new Map();
  state.events.set(id, seen);
  try {
    for (let pages = 0; path && pages < 50; pages++) {
      const r = await api('GET', path);
      if (!r.ok) return;
      for (const e of r.json) seen.set(e.seq, e);
      path = nextPage(r.link);
    }
  } catch (_) {
    // Unreachable for now: the next snapshot reads them again.
  }
  schedule('upgrade', 'host');
}

async function command(id, verb) {
  let r;
  try {
    r = await api('POST', `/v1/upgrades/${encodeURIComponent(id)}/${verb}`,
      { reason: 'from the fleet page' });
  } catch (e) {
    notice(`${verb} ${id}: the orchestrator did not answer (${e && e.message}); try again`, 'bad');
    return;
  }
  if (r.ok) {
    state.upgrades.set(r.json.id, r.json);
    notice(`${id}: ${verb} accepted; the upgrade is ${r.json.phase}`, 'ok');
  } else if (r.status !== 401) {
    notice(`${verb} ${id}: ${(r.json && r.json.error) || `HTTP ${r.status}`}`, 'bad');
  }
  schedule('upgrade', 'fleet');
}

// ---------------------------------------------------------------- the live stream

function setConn(s, text) {
  conn.live = s === 'live';
  const el = $('conn');
  el.dataset.state = s;
  el.textContent = text || s;
}

async function connect() {
  clearTimeout(conn.timer);
  if (!state.token) return;
  const ctrl = new AbortController();
  conn.ctrl = ctrl;
  setConn('connecting', conn.attempt ? 'reconnecting…' : 'connecting…');
  let why = 'the stream ended';
  try {
    const resp = await fetch('/v1/stream', {
      headers: { Authorization: `Bearer ${state.token}`, Accept: 'text/event-stream' },
      cache: 'no-store', credentials: 'omit', signal: ctrl.signal,
    });
    if (resp.status === 401) {
      let msg = null;
      try { msg = (await resp.json()).error; } catch (_) { /* not JSON */ }
      signOut(msg || 'the token was refused');
      return;
    }
    if (!resp.ok || !resp.body) {
      let msg = `HTTP ${resp.status}`;
      try { msg = (await resp.json()).error; } catch (_) { /* not JSON */ }
      throw new Error(msg);
    }
    conn.lastData = Date.now();
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      conn.lastData = Date.now();
      buffer += value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        dispatch(block);
      }
    }
  } catch (e) {
    why = e && e.name === 'AbortError' ? 'the stream went silent' : String(e && e.message || e);
  }
  if (conn.ctrl !== ctrl || !state.token) return;
  conn.ctrl = null;
  // Restart, self-update or failover: connect again (the new stream starts with a
  // snapshot, so nothing is missed); back off while it keeps failing.
  const wait = Math.min(conn.retry * 2 ** Math.min(conn.attempt, 4), MAX_RETRY_MS);
  conn.attempt += 1;
  setConn('reconnecting', `reconnecting in ${Math.round(wait / 1000)}s (${why})`);
  conn.timer = setTimeout(connect, wait);
}

/** One server-sent event: `event:`, `data:` and `retry:` fields; comments are skipped. */
function dispatch(block) {
  let event = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
    else if (field === 'retry' && /^\d+$/.test(value)) conn.retry = Number(value);
  }
  if (!data.length) return;
  let msg;
  try { msg = JSON.parse(data.join('\n')); } catch (_) { return; }
  switch (event) {
    case 'snapshot': onSnapshot(msg); break;
    case 'host': state.hosts.set(msg.id, msg); schedule('fleet', 'host', 'upgrade'); break;
    case 'host-removed': state.hosts.delete(msg.id); schedule('fleet', 'host'); break;
    case 'upgrade': state.upgrades.set(msg.id, msg); schedule('upgrade', 'fleet', 'host'); break;
    case 'event': {
      const seen = state.events.get(msg.upgrade_id) || new Map();
      state.events.set(msg.upgrade_id, seen);
      seen.set(msg.seq, msg);
      schedule('upgrade', 'host');
      break;
    }
    default: break;
  }
}

function onSnapshot(s) {
  state.snapshots += 1;
  state.server = { replica: s.replica, version: s.version };
  state.hosts = new Map(s.hosts.map((x) => [x.id, x]));
  state.upgrades = new Map(s.upgrades.map((u) => [u.id, u]));
  conn.attempt = 0;
  setConn('live', 'live');
  $('server').textContent = `${s.replica} · ${s.version}`;
  // Events written while disconnected: read the shown ones again.
  const shown = shownUpgrade();
  if (shown) loadEvents(shown.id);
  if (state.route.view === 'host') loadHistory(state.route.id);
  schedule('upgrade', 'fleet', 'host');
}

// A half-open connection (a replica that vanished) sends nothing, not even keep-alives.
setInterval(() => {
  if (conn.ctrl && conn.live && Date.now() - conn.lastData > SILENCE_MS) conn.ctrl.abort();
  // Elapsed times move on.
  for (const el of document.querySelectorAll('[data-since]')) {
    el.textContent = `${el.dataset.before || ''}${ago(el.dataset.since)}${el.dataset.after || ''}`;
  }
}, 1000);

/** A text that tells how long ago `ts` was, kept current. */
function since(ts, before, after) {
  return h('span', { 'data-since': ts || '', 'data-before': before, 'data-after': after,
    text: `${before || ''}${ago(ts)}${after || ''}` });
}

// ---------------------------------------------------------------- sign in and out

function signIn(token) {
  state.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  $('login').hidden = true;
  $('app').hidden = false;
  $('logout').hidden = false;
  $('login-error').textContent = '';
  conn.attempt = 0;
  connect();
}

function signOut(reason) {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  if (conn.ctrl) conn.ctrl.abort();
  conn.ctrl = null;
  clearTimeout(conn.timer);
  state.hosts = new Map();
  state.upgrades = new Map();
  state.events = new Map();
  $('app').hidden = true;
  $('logout').hidden = true;
  $('login').hidden = false;
  $('server').textContent = '';
  $('login-error').textContent = reason || '';
  setConn('offline', 'signed out');
  $('token').value = '';
  $('token').focus();
}

// ---------------------------------------------------------------- what is shown

function labels(host) { return (host.spec && host.spec.labels) || {}; }

function hostState(host) { return (host.status && host.status.state) || 'Unknown'; }

function shownUpgrade() {
  if (state.chosen && state.upgrades.has(state.chosen)) return state.upgrades.get(state.chosen);
  const all = [...state.upgrades.values()];
  // Fleet upgrades before the orchestrator's own one-host tasks.
  const pick = (list) => list.find((u) => u.active) || list.find((u) => !TERMINAL.has(u.phase))
    || list[list.length - 1];
  return pick(all.filter((u) => !u.task)) || pick(all) || null;
}

function zoneLabel() {
  const u = shownUpgrade();
  return (u && u.strategy && u.strategy.zone_label) || 'zone';
}

function problem(host) {
  const s = hostState(host);
  return s === 'Failed' || s === 'RolledBack' || !host.alive
    || host.effective_maintenance !== 'none';
}

function matches(host, words, outcome) {
  if (state.problems && !problem(host)) return false;
  if (!words.length) return true;
  const l = labels(host);
  const hay = lower([host.id, Object.values(l).join(' '), hostState(host),
    host.installed && host.installed.bundle_version, host.status && host.status.step,
    host.effective_maintenance, outcome && outcome.state, host.alive ? '' : 'down offline'].join(' '));
  return words.every((w) => hay.includes(w));
}

// ---------------------------------------------------------------- rendering

function render() {
  frame = 0;
  if (!state.token) return;
  const hostView = state.route.view === 'host';
  $('fleet').hidden = hostView;
  $('host').hidden = !hostView;
  if (dirty.upgrade) renderUpgrade();
  if (dirty.fleet && !hostView) renderFleet();
  if (dirty.host && hostView) renderHost();
  dirty.upgrade = dirty.fleet = dirty.host = false;
}

function strategyText(s) {
  if (!s) return '';
  if (s.kind === 'rolling') {
    const batch = s.batch && (s.batch.count !== undefined ? `${s.batch.count}` : `${s.batch.percent}%`);
    const parts = [`rolling, batches of ${batch}`];
    if (s.canary) parts.push(`${s.canary} canary${s.pause_after_canary ? ', pause after' : ''}`);
    if (s.zone_label) parts.push(`by ${s.zone_label}`);
    if (s.max_failures) parts.push(`${s.max_failures} failure(s) tolerated`);
    return parts.join(', ');
  }
  if (s.kind === 'all-at-once') return 'all at once';
  return s.kind;
}

/** The upgrade's batches: each with its hosts' outcomes. */
function batches(u) {
  const out = new Map();
  for (const [id, o] of Object.entries(u.hosts || {})) {
    const b = o.batch === undefined ? 0 : o.batch;
    if (!out.has(b)) out.set(b, []);
    out.get(b).push([id, o]);
  }
  return [...out.entries()].sort((a, b) => a[0] - b[0]);
}

function batchState(hosts) {
  const s = hosts.map(([, o]) => o.state);
  if (s.some((x) => x === 'Failed')) return 'failed';
  if (s.every((x) => x === 'Succeeded' || x === 'Skipped')) return 'done';
  if (s.some((x) => x === 'Dispatched')) return 'active';
  if (s.some((x) => x === 'Held')) return 'held';
  return 'waiting';
}

/** What the upgrade waits for now, in words. */
function waits(u) {
  const out = [];
  const hosts = Object.entries(u.hosts || {});
  const count = (st) => hosts.filter(([, o]) => o.state === st).length;
  const phase = u.phase;
  if (phase === 'Pending') out.push('waiting to start');
  if (u.orchestrator && !u.orchestrator.handed_over_at && !TERMINAL.has(phase)) {
    out.push(`orchestrator self-update first: ${u.orchestrator.image}`);
  }
  if (phase === 'Downloading') {
    out.push(`staging the bundle: ${hosts.length - count('Pending') - count('Held')} of ${hosts.length} hosts downloaded`);
  }
  if (phase === 'UpdatingAgents') {
    const ready = hosts.filter(([id]) => {
      const host = state.hosts.get(id);
      return host && host.alive && host.alive.agent_version === u.agent_version;
    }).length;
    out.push(`waiting for the agents to run ${u.agent_version}: ${ready} of ${hosts.length}`);
  }
  if (phase === 'Installing') {
    const all = batches(u);
    const open = all.filter(([, hs]) => batchState(hs) === 'active').map(([b]) => b);
    const done = all.filter(([, hs]) => batchState(hs) === 'done').length;
    if (open.length) out.push(`installing batch ${open.join(', ')}; ${done} of ${all.length} batches done`);
  }
  if (phase === 'Paused') {
    const s = u.strategy || {};
    if (s.pause_after_canary && !u.canary_approved && u.reason && /canar/i.test(u.reason)) {
      out.push('waiting for approval after the canary: resume to go on');
    } else {
      out.push(`paused${u.paused_from ? ` in ${u.paused_from}` : ''}: resume to go on`);
    }
  }
  const held = count('Held');
  if (held) out.push(`waiting for ${held} host(s) in maintenance mode paused`);
  // Waits the record may name that this page does not know by name (soak, windows).
  for (const [k, v] of Object.entries(u)) {
    if (/soak|window|wait/i.test(k) && v !== null && v !== false && typeof v !== 'object') {
      out.push(`${k.replace(/_/g, ' ')}: ${v}`);
    }
  }
  return out;
}

function progress(u) {
  const total = Object.keys(u.hosts || {}).length || 1;
  const counts = u.counts || {};
  const bar = h('div', { class: 'bar', role: 'img' });
  for (const st of OUTCOMES) {
    const n = counts[st] || 0;
    if (!n) continue;
    const seg = h('span', { class: `seg oc-${lower(st)}`, title: `${st}: ${n}` });
    seg.style.width = `${(100 * n) / total}%`;
    bar.append(seg);
  }
  const done = (counts.Succeeded || 0) + (counts.Failed || 0) + (counts.Skipped || 0);
  bar.setAttribute('aria-label', `${done} of ${total} hosts finished`);
  const legend = h('div', { class: 'legend' },
    OUTCOMES.filter((st) => counts[st]).map((st) => h('span', { class: `chip oc-${lower(st)}` }, `${st} ${counts[st]}`)));
  return h('div', { class: 'progress' },
    h('div', { class: 'progress-head' }, h('strong', { text: `${done} of ${Object.keys(u.hosts || {}).length} hosts finished` })),
    bar, legend);
}

function timeline(u) {
  const seen = state.events.get(u.id);
  const list = seen ? [...seen.values()].sort((a, b) => b.seq - a.seq).slice(0, TIMELINE) : [];
  return h('div', { class: 'timeline' },
    h('h3', { text: `Events of ${u.id}${seen ? ` (${seen.size})` : ''}` }),
    list.length ? h('ol', { id: 'timeline' }, list.map((e) => h('li', { class: `ev ev-${lower(e.kind).replace(/[^a-z-]/g, '')}` },
      h('time', { datetime: e.at, title: when(e.at), text: clock(e.at) }),
      h('span', { class: 'kind', text: e.kind }),
      e.host ? h('a', { class: 'ev-host', href: `#host/${encodeURIComponent(e.host)}`, text: e.host }) : null,
      h('span', { class: 'msg', text: e.message }))))
      : h('p', { class: 'muted', text: 'No event yet.' }));
}

/** Elements kept across renders (a select or a filter box that is rebuilt loses focus). */
const ui = {};

function upgradeShell() {
  if (ui.upgradeBody) return;
  ui.upgradeTitle = h('h2');
  ui.phase = h('span', { id: 'phase', class: 'phase' });
  ui.picker = h('select', {
    id: 'upgrade-pick', 'aria-label': 'upgrade',
    onchange: (ev) => { state.chosen = ev.target.value; loadEvents(state.chosen); schedule('upgrade', 'fleet'); },
  });
  // The buttons stay the same elements (a click never lands on one that was replaced);
  // they act on the upgrade shown when clicked.
  const act = (verb) => () => { if (ui.shownId) command(ui.shownId, verb); };
  ui.pause = h('button', { id: 'pause', type: 'button', text: 'Pause', onclick: act('pause') });
  ui.resume = h('button', { id: 'resume', type: 'button', class: 'primary', text: 'Resume', onclick: act('resume') });
  // Abort asks again, in the page (no modal dialog).
  ui.abort = h('button', {
    id: 'abort', type: 'button', class: 'danger-outline', text: 'Abort',
    onclick: () => {
      ui.confirm = { id: ui.shownId, until: Date.now() + 10000 };
      schedule('upgrade');
      setTimeout(() => schedule('upgrade'), 10100);
    },
  });
  ui.abortConfirm = h('button', {
    id: 'abort-confirm', type: 'button', class: 'danger', text: 'Really abort',
    onclick: () => { const c = ui.confirm; ui.confirm = null; if (c) command(c.id, 'abort'); },
  });
  ui.abortCancel = h('button', { id: 'abort-cancel', type: 'button', text: 'Cancel',
    onclick: () => { ui.confirm = null; schedule('upgrade'); } });
  ui.actions = h('div', { class: 'actions' }, ui.pause, ui.resume, ui.abort, ui.abortConfirm, ui.abortCancel);
  ui.upgradeBody = h('div');
  $('upgrade').replaceChildren(h('div', { class: 'upgrade-head' }, ui.upgradeTitle, ui.phase, ui.picker, ui.actions),
    ui.upgradeBody);
}

function renderUpgrade() {
  upgradeShell();
  const u = shownUpgrade();
  const head = ui.upgradeTitle.parentElement;
  head.hidden = !u;
  if (!u) {
    ui.upgradeBody.replaceChildren(h('h2', { text: 'No upgrade yet' }),
      h('p', { class: 'muted', text: 'Start one with batonctl upgrade start, or POST /v1/upgrades.' }));
    $('events').replaceChildren();
    return;
  }
  const terminal = TERMINAL.has(u.phase);
  ui.upgradeTitle.textContent = u.task ? `Task ${u.id}` : `Upgrade ${u.id}`;
  ui.phase.className = `phase ph-${lower(u.phase)}`;
  ui.phase.dataset.phase = u.phase;
  ui.phase.textContent = u.phase;
  const choices = [...state.upgrades.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  const key = `${u.id}|${choices.map((c) => `${c.id}:${c.phase}`).join(',')}`;
  if (ui.pickerKey !== key) {
    ui.pickerKey = key;
    ui.picker.replaceChildren(...choices.map((c) => {
      const o = h('option', { value: c.id, text: `${c.id} — ${c.version} — ${c.phase}${c.task ? ` (${c.task.kind} task)` : ''}` });
      if (c.id === u.id) o.selected = true;
      return o;
    }));
  }
  ui.shownId = u.id;
  const confirming = Boolean(ui.confirm && ui.confirm.id === u.id && ui.confirm.until > Date.now());
  ui.pause.hidden = terminal || u.phase === 'Paused';
  ui.resume.hidden = u.phase !== 'Paused';
  ui.abort.hidden = terminal || confirming;
  ui.abortConfirm.hidden = terminal || !confirming;
  ui.abortCancel.hidden = terminal || !confirming;
  const info = h('dl', { class: 'facts' },
    h('dt', { text: 'Version' }), h('dd', { text: `${u.version}${u.agent_version && u.agent_version !== u.version ? ` (agent ${u.agent_version})` : ''}` }),
    h('dt', { text: 'Strategy' }), h('dd', { text: strategyText(u.strategy) + (u.strategy_reason ? ` — ${u.strategy_reason}` : '') }),
    h('dt', { text: 'Started' }), h('dd', {}, `${when(u.created_at)} `, since(u.created_at, '(', ' ago)')),
    h('dt', { text: 'Phase' }), h('dd', {}, `${u.phase}${u.paused_from ? ` (from ${u.paused_from})` : ''} `, since(u.phase_since || u.updated_at, 'for ')),
    u.reason ? h('dt', { text: 'Reason' }) : null, u.reason ? h('dd', { id: 'reason', text: u.reason }) : null);
  const w = waits(u);
  const bs = batches(u);
  const compact = bs.length > 40;
  const strip = h('div', { class: `batches${compact ? ' compact' : ''}` }, bs.map(([b, hs]) => {
    const done = hs.filter(([, o]) => o.state === 'Succeeded' || o.state === 'Skipped').length;
    const title = `batch ${b}${b === 0 && u.strategy && u.strategy.canary ? ' (canary)' : ''}: ${hs.map(([id, o]) => `${id} ${o.state}`).join(', ')}`;
    return h('span', { class: `batch bs-${batchState(hs)}`, title, 'data-batch': b }, compact ? '' : `${b}: ${done}/${hs.length}`);
  }));
  ui.upgradeBody.replaceChildren(h('div', { class: 'upgrade-grid' },
    h('div', {}, info,
      w.length ? h('ul', { class: 'waits', id: 'waits' }, w.map((t) => h('li', { text: t }))) : ''),
    h('div', {}, progress(u),
      h('div', { class: 'batches-box' }, h('h3', { text: `Batches (${bs.length})` }), strip))));
  $('events').replaceChildren(timeline(u));
  if (!state.events.has(u.id)) loadEvents(u.id);
}

function tile(host, outcome) {
  const st = hostState(host);
  const l = labels(host);
  const inst = host.installed || {};
  const badges = [];
  if (!host.alive && st !== 'Rebooting') badges.push(h('span', { class: 'badge down', text: 'agent down' }));
  if (host.effective_maintenance && host.effective_maintenance !== 'none') {
    badges.push(h('span', { class: 'badge maint', text: host.effective_maintenance }));
  }
  if (outcome) badges.push(h('span', { class: `badge oc-${lower(outcome.state)}`, text: `b${outcome.batch === undefined ? '?' : outcome.batch} ${outcome.state}` }));
  const step = host.status && host.status.step;
  return h('a', {
    class: `tile st-${lower(st)}${host.alive ? '' : ' is-down'}`,
    href: `#host/${encodeURIComponent(host.id)}`,
    'data-host': host.id, 'data-state': st,
    title: [host.id, st, step, host.status && host.status.message, `group ${l.group || '-'}`].filter(Boolean).join('\n'),
  },
  h('span', { class: 'name', text: host.id }),
  h('span', { class: 'line', text: `${st}${inst.bundle_version ? ` · ${inst.bundle_version}` : ''}` }),
  h('span', { class: 'sub', text: step || (host.alive ? `agent ${host.alive.agent_version}` : '') }),
  badges.length ? h('span', { class: 'badges' }, badges) : null);
}

function summary(hosts) {
  const counts = new Map();
  for (const x of hosts) counts.set(hostState(x), (counts.get(hostState(x)) || 0) + 1);
  const total = hosts.length || 1;
  const bar = h('div', { class: 'bar small' });
  const chips = [];
  for (const st of STATES) {
    const n = counts.get(st) || 0;
    if (!n) continue;
    const seg = h('span', { class: `seg st-${lower(st)}`, title: `${st}: ${n}` });
    seg.style.width = `${(100 * n) / total}%`;
    bar.append(seg);
    chips.push(h('span', { class: `chip st-${lower(st)}`, text: `${st} ${n}` }));
  }
  const down = hosts.filter((x) => !x.alive).length;
  if (down) chips.push(h('span', { class: 'chip down', text: `agent down ${down}` }));
  const maint = hosts.filter((x) => x.effective_maintenance && x.effective_maintenance !== 'none').length;
  if (maint) chips.push(h('span', { class: 'chip maint', text: `maintenance ${maint}` }));
  return [bar, h('span', { class: 'chips' }, chips)];
}

function fleetShell() {
  if (ui.fleetBody) return;
  ui.fleetTitle = h('h2');
  ui.shownCount = h('span', { class: 'muted' });
  const filter = h('input', {
    id: 'filter', type: 'search', placeholder: 'filter: host, zone, group, state, version…', 'aria-label': 'filter hosts',
    oninput: (ev) => { state.filter = ev.target.value; schedule('fleet'); },
  });
  const problems = h('input', {
    id: 'problems', type: 'checkbox',
    onchange: (ev) => { state.problems = ev.target.checked; schedule('fleet'); },
  });
  ui.fleetBody = h('div');
  $('fleet').replaceChildren(h('div', { class: 'fleet-head' }, ui.fleetTitle, filter,
    h('label', { class: 'check' }, problems, ' problems only'), ui.shownCount), ui.fleetBody);
}

function renderFleet() {
  fleetShell();
  const u = shownUpgrade();
  const outcomes = (u && u.hosts) || {};
  const zl = zoneLabel();
  const all = [...state.hosts.values()];
  const words = lower(state.filter).split(/\s+/).filter(Boolean);
  const shown = all.filter((x) => matches(x, words, outcomes[x.id]));
  const zones = new Map();
  for (const x of shown) {
    const z = labels(x)[zl] || '(none)';
    const g = labels(x).group || '(none)';
    if (!zones.has(z)) zones.set(z, new Map());
    const groups = zones.get(z);
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(x);
  }
  const filtering = words.length > 0 || state.problems;
  const foldDefault = all.length > FOLD_ABOVE;
  ui.fleetTitle.textContent = `Fleet: ${all.length} host${all.length === 1 ? '' : 's'}`;
  ui.shownCount.textContent = filtering ? `${shown.length} shown` : '';
  const sections = [...zones.entries()].sort((a, b) => a[0].localeCompare(b[0])).map(([z, groups]) => {
    const members = [...groups.values()].flat();
    const open = filtering || (state.zones.has(z) ? state.zones.get(z) : !foldDefault);
    const toggle = h('button', {
      type: 'button', class: 'fold', 'aria-expanded': String(open), title: open ? 'fold' : 'unfold', text: open ? '▾' : '▸',
      onclick: () => { state.zones.set(z, !open); schedule('fleet'); },
    });
    return h('section', { class: 'zone', 'data-zone': z },
      h('div', { class: 'zone-head' }, toggle, h('h3', { text: `${zl} ${z}` }),
        h('span', { class: 'muted', text: `${members.length} host${members.length === 1 ? '' : 's'}` }),
        h('div', { class: 'zone-summary' }, summary(members))),
      open ? h('div', { class: 'zone-body' }, [...groups.entries()].sort((a, b) => a[0].localeCompare(b[0])).map(([g, hs]) => h('div', { class: 'group', 'data-group': g },
        h('h4', { text: `group ${g} (${hs.length})` }),
        h('div', { class: 'tiles' }, hs.sort((a, b) => a.id.localeCompare(b.id)).map((x) => tile(x, outcomes[x.id]))))))
        : null);
  });
  ui.fleetBody.replaceChildren(h('div', { class: 'summary' }, summary(all)), ...sections,
    shown.length ? '' : h('p', { class: 'muted', text: all.length ? 'No host matches the filter.' : 'No host is registered yet.' }));
}

// ---------------------------------------------------------------- a host's page

function hostUpgrades(id) {
  return [...state.upgrades.values()].filter((u) => u.hosts && u.hosts[id])
    .sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
}

/** The events of the host's ten most recent upgrades (its history's). */
function loadHistory(id) {
  for (const u of hostUpgrades(id).slice(0, 10)) loadEvents(u.id);
}

function kv(rows) {
  return h('dl', { class: 'facts' }, rows.filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => [h('dt', { text: k }), h('dd', {}, v)]));
}

function renderHost() {
  const el = $('host');
  const id = state.route.id;
  const host = state.hosts.get(id);
  const back = h('a', { href: '#', class: 'back', text: '← fleet' });
  if (!host) {
    el.replaceChildren(back, h('h2', { text: id }), h('p', { class: 'muted', text: 'This host is not known (yet).' }));
    return;
  }
  const st = hostState(host);
  const l = labels(host);
  const s = host.status || {};
  const inst = host.installed || {};
  const d = host.desired;
  const m = host.maintenance || host.group_maintenance;
  const comps = Object.entries(inst.components || {}).map(([k, v]) => `${k} ${v}`).join(', ');
  const ups = hostUpgrades(id);
  const events = [];
  for (const u of ups) {
    for (const e of (state.events.get(u.id) || new Map()).values()) {
      if (e.host === id) events.push({ ...e, upgrade_id: u.id });
    }
  }
  events.sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : b.seq - a.seq));
  el.replaceChildren(
    back,
    h('div', { class: 'host-head' }, h('h2', { text: id }),
      h('span', { class: `phase st-${lower(st)}`, id: 'host-state', 'data-state': st, text: st }),
      host.alive ? null : h('span', { class: 'badge down', text: 'agent down' })),
    h('div', { class: 'cols' },
      h('div', {}, h('h3', { text: 'Now' }), kv([
        ['Labels', Object.entries(l).map(([k, v]) => `${k}=${v}`).join(' ') || '—'],
        ['State', st],
        ['Step', s.step],
        ['Message', s.message],
        ['Working on', s.upgrade_id ? `${s.upgrade_id}${s.started_at ? `, since ${when(s.started_at)}` : ''}` : ''],
        ['Reported', s.updated_at ? `${when(s.updated_at)} (${ago(s.updated_at)} ago)` : ''],
        ['Told', d ? `${d.action} ${d.version} for ${d.upgrade_id}${d.after ? `, after ${d.after}` : ''}` : ''],
        ['Maintenance', host.effective_maintenance !== 'none'
          ? `${host.effective_maintenance}${m && m.reason ? ` — ${m.reason}` : ''}${host.maintenance ? '' : ' (group)'}` : 'none'],
      ])),
      h('div', {}, h('h3', { text: 'Runs' }), kv([
        ['Bundle', inst.bundle_version || '—'],
        ['Agent', host.alive ? `${host.alive.agent_version}, pid ${host.alive.pid}, up since ${when(host.alive.since)}` : 'not running (no alive key)'],
        ['Kernel', inst.kernel],
        ['Components', comps],
        ['Docker', host.spec && host.spec.docker],
        ['Registered', host.spec && when(host.spec.registered_at)],
      ]))),
    h('h3', { text: 'History' }),
    ups.length ? h('table', { class: 'history' },
      h('thead', {}, h('tr', {}, ['Upgrade', 'Version', 'Upgrade phase', 'This host', 'Batch', 'Dispatched', 'Reason'].map((t) => h('th', { text: t })))),
      h('tbody', {}, ups.map((u) => {
        const o = u.hosts[id];
        return h('tr', {},
          h('td', {}, h('a', { href: '#', text: u.id, onclick: (ev) => { ev.preventDefault(); state.chosen = u.id; location.hash = ''; } })),
          h('td', { text: u.version }),
          h('td', {}, h('span', { class: `phase ph-${lower(u.phase)}`, text: u.phase })),
          h('td', {}, h('span', { class: `chip oc-${lower(o.state)}`, text: o.state })),
          h('td', { text: o.batch === undefined ? '' : String(o.batch) }),
          h('td', { text: o.dispatched_at ? when(o.dispatched_at) : '' }),
          h('td', { text: o.reason || '' }));
      }))) : h('p', { class: 'muted', text: 'No upgrade has named this host (among the recent ones).' }),
    h('h3', { text: 'Events of this host' }),
    events.length ? h('ol', { class: 'host-events' }, events.slice(0, TIMELINE).map((e) => h('li', {},
      h('time', { datetime: e.at, text: when(e.at) }), h('span', { class: 'kind', text: e.kind }),
      h('span', { class: 'muted', text: e.upgrade_id }), h('span', { class: 'msg', text: e.message }))))
      : h('p', { class: 'muted', text: 'No event names this host.' }));
}

// ---------------------------------------------------------------- routes and start

function route() {
  const m = /^#host\/(.+)$/.exec(location.hash);
  state.route = m ? { view: 'host', id: decodeURIComponent(m[1]) } : { view: 'fleet' };
  if (state.route.view === 'host' && state.token) loadHistory(state.route.id);
  window.scrollTo(0, 0);
  schedule('upgrade', 'fleet', 'host');
}

function start() {
  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = $('token').value.trim();
    if (token) signIn(token);
  });
  $('logout').addEventListener('click', () => signOut(''));
  window.addEventListener('hashchange', route);
  route();
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved);
  else signOut('');
}

start();
