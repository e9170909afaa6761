// Marquee trading UI: watchlist, live quotes, latency readout; a click on a
// row opens the symbol's detail panel (depth, trades, chart: detail.js).
import { showToast } from './toast.js';
import { Connection, nowMs } from './conn.js';
import { Sparkline } from './sparkline.js';
import { DetailPanel } from './detail.js';

const STORAGE_KEY = 'marquee.watchlist.v1';
const DEFAULTS = ['AAPL', 'MSFT', 'NVDA', 'TSLA', 'AMZN'];
const WINDOW_MS = 1000;

const $ = (sel) => document.querySelector(sel);
const els = {
  rows: $('#rows'),
  empty: $('#empty'),
  form: $('#add-form'),
  input: $('#symbol-input'),
  list: $('#symbol-list'),
  error: $('#symbol-error'),
  status: $('#conn-status'),
  latency: $('#latency'),
  rate: $('#rate'),
  gaps: $('#gaps'),
  count: $('#symbol-count'),
  toasts: $('#toasts'),
  content: $('.content'),
  detail: $('#detail'),
};

let known = null;              // Set of symbols from /api/symbols, null until loaded
let knownList = [];
let knownByUpper = new Map();  // case-insensitive lookup -> symbol as the server spells it
const canon = (s) => knownByUpper.get(s.toUpperCase()) ?? s.toUpperCase();
let watch = [];                // ordered symbols on the watchlist
const rows = new Map();        // symbol -> row state
const dirty = new Set();       // rows needing a DOM update next frame
let frameQueued = false;

// ---------- formatting ----------
const nf = (d) => new Intl.NumberFormat('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
const NF2 = nf(2);
const NF4 = nf(4);
const NF0 = nf(0);
const fmtPrice = (v) => (Number.isFinite(v) ? (Math.abs(v) < 1 ? NF4 : NF2).format(v) : '–');
const signed = (s, v) => (v > 0 ? '+' + s : s);
const dirClass = (v) => (v > 0 ? 'up' : v < 0 ? 'down' : 'flat');

// ---------- sliding one-second windows for latency and rate ----------
class Window {
  constructor() { this.t = []; this.v = []; this.head = 0; }
  push(t, v) { this.t.push(t); this.v.push(v); }
  trim(now) {
    const cut = now - WINDOW_MS;
    while (this.head < this.t.length && this.t[this.head] < cut) this.head++;
    if (this.head > 4096 && this.head * 2 > this.t.length) {
      this.t = this.t.slice(this.head);
      this.v = this.v.slice(this.head);
      this.head = 0;
    }
  }
  get size() { return this.t.length - this.head; }
  median() {
    const n = this.size;
    if (!n) return NaN;
    const a = Float64Array.from(this.v.slice(this.head)).sort();
    return n % 2 ? a[(n - 1) >> 1] : (a[n / 2 - 1] + a[n / 2]) / 2;
  }
}
const latencyWin = new Window();
const rateWin = new Window();
let gapCount = 0;

// ---------- rows ----------
function makeRow(sym) {
  const tr = document.createElement('tr');
  tr.dataset.symbol = sym;
  const td = (field, cls) => {
    const c = document.createElement('td');
    if (field) c.dataset.field = field;
    if (cls) c.className = cls;
    tr.appendChild(c);
    return c;
  };
  tr.tabIndex = 0;
  tr.addEventListener('click', (e) => {
    if (!e.target.closest('button')) detail.open(sym);
  });
  tr.addEventListener('keydown', onRowKey);
  const symCell = td('symbol', 'sym');
  symCell.textContent = sym;
  const cells = {
    bid: td('bid', 'num'),
    ask: td('ask', 'num'),
    last: td('last', 'num'),
    change: td('change', 'num'),
    pct: td('change-pct', 'num'),
    size: td('size', 'num'),
  };
  for (const c of Object.values(cells)) c.textContent = '–';
  const sparkCell = td('spark', 'spark-col');
  const canvas = document.createElement('canvas');
  canvas.className = 'spark';
  sparkCell.appendChild(canvas);
  const act = td(null, 'act');
  const btn = document.createElement('button');
  btn.type = 'button';
  btn.className = 'remove';
  btn.title = `Remove ${sym}`;
  btn.setAttribute('aria-label', `Remove ${sym}`);
  btn.textContent = '×';
  btn.addEventListener('click', () => removeSymbol(sym));
  act.appendChild(btn);
  return {
    sym, tr, cells, spark: new Sparkline(canvas),
    bid: NaN, ask: NaN, last: NaN, size: NaN, base: NaN,
    flash: {},       // field -> 'up' | 'down' pending for next frame
    phase: {},       // field -> alternating 'a' / 'b'
    flashOn: {},     // field -> {dir, at} of the running flash
    shown: {},       // field -> last text written, to skip no-op DOM writes
  };
}

function setText(row, key, text, cls) {
  const cell = row.cells[key];
  if (row.shown[key] !== text) {
    cell.textContent = text;
    row.shown[key] = text;
  }
  if (cls !== undefined && cell.dataset.dir !== cls) {
    cell.classList.remove('up', 'down', 'flat');
    cell.classList.add(cls);
    cell.dataset.dir = cls;
  }
}

const FLASH_RESTART_MS = 200; // same-direction changes closer than this extend the current flash

function flashCell(row, key, dir, now) {
  const cell = row.cells[key];
  const prev = row.flashOn[key];
  if (prev && prev.dir === dir && now - prev.at < FLASH_RESTART_MS) return;
  row.flashOn[key] = { dir, at: now };
  const next = row.phase[key] === 'a' ? 'b' : 'a';
  row.phase[key] = next;
  cell.classList.remove('flash-up-a', 'flash-up-b', 'flash-down-a', 'flash-down-b');
  cell.classList.add(`flash-${dir}-${next}`);
}

function renderRow(row, now) {
  setText(row, 'bid', fmtPrice(row.bid));
  setText(row, 'ask', fmtPrice(row.ask));
  setText(row, 'last', fmtPrice(row.last));
  setText(row, 'size', Number.isFinite(row.size) ? NF0.format(row.size) : '–');
  if (Number.isFinite(row.last) && Number.isFinite(row.base)) {
    const d = row.last - row.base;
    const pct = row.base ? (d / row.base) * 100 : 0;
    const abs = Math.abs(row.base) < 1 ? NF4.format(d) : NF2.format(d);
    setText(row, 'change', signed(abs, d), dirClass(d));
    setText(row, 'pct', signed(NF2.format(pct), pct) + '%', dirClass(d));
  }
  for (const [key, dir] of Object.entries(row.flash)) flashCell(row, key, dir, now);
  row.flash = {};
  row.spark.draw();
}

function scheduleFrame() {
  if (frameQueued) return;
  frameQueued = true;
  requestAnimationFrame(() => {
    frameQueued = false;
    const now = performance.now();
    for (const row of dirty) renderRow(row, now);
    dirty.clear();
  });
}

function applyQuote(ev, recvMs) {
  const sym = ev.symbol || String(ev.topic || '').replace(/^ticks\./, '');
  const row = rows.get(sym);
  if (!row) return;
  rateWin.push(recvMs, 1);
  const ts = Number(ev.ts); // Unix ns; a double loses a few hundred ns, fine for ms
  if (ev.type === 'tick' && ev.ts != null && Number.isFinite(ts)) latencyWin.push(recvMs, recvMs - ts / 1e6);
  const upd = (key, v) => {
    if (!Number.isFinite(v)) return;
    const prev = row[key];
    if (Number.isFinite(prev) && v !== prev) row.flash[key] = v > prev ? 'up' : 'down';
    row[key] = v;
  };
  upd('last', ev.price);
  upd('bid', ev.bid);
  upd('ask', ev.ask);
  if (Number.isFinite(ev.size)) row.size = ev.size;
  if (!Number.isFinite(row.base) && Number.isFinite(ev.price)) row.base = ev.price;
  row.spark.push(ev.price);
  dirty.add(row);
  scheduleFrame();
}

// ---------- watchlist ----------
function persist() {
  try { localStorage.setItem(STORAGE_KEY, JSON.stringify(watch)); } catch { /* private mode */ }
}

function loadStored() {
  try {
    const v = JSON.parse(localStorage.getItem(STORAGE_KEY));
    return Array.isArray(v) ? v.filter((s) => typeof s === 'string') : null;
  } catch {
    return null;
  }
}

function refreshChrome() {
  els.empty.hidden = watch.length > 0;
  els.count.textContent = known ? `${watch.length} of ${knownList.length} symbols` : `${watch.length} symbols`;
  const frag = document.createDocumentFragment();
  for (const s of knownList) {
    if (rows.has(s)) continue;
    const o = document.createElement('option');
    o.value = s;
    frag.appendChild(o);
  }
  els.list.replaceChildren(frag);
}

function addRow(sym) {
  const row = makeRow(sym);
  rows.set(sym, row);
  els.rows.appendChild(row.tr);
  return row;
}

function addSymbol(sym) {
  watch.push(sym);
  const row = addRow(sym);
  persist();
  refreshChrome();
  conn.subscribe([`ticks.${sym}`]);
  return row;
}

function removeSymbol(sym, { tellServer = true } = {}) {
  if (detail.symbol === sym) detail.close();
  const row = rows.get(sym);
  if (row) {
    row.spark.dispose();
    row.tr.remove();
    dirty.delete(row);
    rows.delete(sym);
  }
  watch = watch.filter((s) => s !== sym);
  persist();
  refreshChrome();
  if (tellServer) conn.unsubscribe([`ticks.${sym}`]);
  else conn.forget([`ticks.${sym}`]);
}

function showError(msg) {
  els.error.textContent = msg;
  els.error.hidden = !msg;
  els.input.setAttribute('aria-invalid', msg ? 'true' : 'false');
}

function highlight(row) {
  row.tr.classList.remove('highlight');
  void row.tr.offsetWidth; // restart the animation (rare, user-driven)
  row.tr.classList.add('highlight');
  row.tr.scrollIntoView({ block: 'nearest' });
  setTimeout(() => row.tr.classList.remove('highlight'), 1300);
}

function onSubmit(e) {
  e.preventDefault();
  const sym = canon(els.input.value.trim());
  if (!sym) return showError('Type a symbol to add.');
  if (!known && !/^[A-Z0-9._:/-]{1,32}$/.test(sym)) return showError(`“${sym}” is not a valid symbol.`);
  if (rows.has(sym)) {
    showError(`${sym} is already on your watchlist.`);
    highlight(rows.get(sym));
    return;
  }
  if (known && !known.has(sym)) return showError(`Unknown symbol “${sym}”.`);
  showError('');
  els.input.value = '';
  highlight(addSymbol(sym));
}

// ---------- detail panel ----------
function onRowKey(e) {
  if (e.target !== e.currentTarget) return; // keys on the remove button stay its own
  const tr = e.currentTarget;
  if (e.key === 'Enter' || e.key === ' ') {
    e.preventDefault();
    detail.open(tr.dataset.symbol);
  } else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
    const next = e.key === 'ArrowDown' ? tr.nextElementSibling : tr.previousElementSibling;
    if (!next) return;
    e.preventDefault();
    next.focus();
    if (detail.symbol) detail.open(next.dataset.symbol);
  }
}

function onDetailChange(sym) {
  for (const row of rows.values()) {
    const on = row.sym === sym;
    row.tr.classList.toggle('selected', on);
    row.tr.setAttribute('aria-selected', String(on));
  }
  els.content.classList.toggle('has-detail', !!sym);
  if (sym) els.detail.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
}

function onKey(e) {
  if (e.key !== 'Escape' || !detail.symbol || e.defaultPrevented) return;
  if (e.target instanceof HTMLInputElement && e.target.value) return; // Escape clears the input first
  const row = rows.get(detail.symbol);
  detail.close();
  if (row) row.tr.focus();
}

// ---------- toasts ----------
function toast(msg, kind = 'error', ms = 4500) {
  showToast(els.toasts, msg, kind, ms);
}

function onServerError(ev, req) {
  if (detail.handleSubscribeError(ev, req)) return;
  toast(`${ev.code || 'error'}: ${ev.message || 'server error'}`);
  if (ev.code !== 'unknown_topic' || !req || req.op !== 'subscribe') return;
  const words = new Set(String(ev.message || '').split(/[\s"'`,;()[\]{}]+/));
  let bad = req.topics.filter((t) => {
    const sym = t.replace(/^ticks\./, '');
    return words.has(t) || words.has(sym) || (known && !known.has(sym));
  });
  if (!bad.length && req.topics.length === 1) bad = req.topics;
  for (const t of bad) {
    const sym = t.replace(/^ticks\./, '');
    removeSymbol(sym, { tellServer: false });
    showError(`Unknown symbol “${sym}”.`);
  }
  // The server may have rejected the whole request; retry the rest.
  if (bad.length) conn.resubscribe(req.topics.filter((t) => !bad.includes(t)));
}

// ---------- status / stats ----------
function setStatus(s) {
  els.status.textContent = s;
  els.status.className = `badge ${s}`;
}

function updateStats() {
  const now = nowMs();
  latencyWin.trim(now);
  rateWin.trim(now);
  const med = latencyWin.median();
  els.latency.textContent = Number.isFinite(med) ? `${med.toFixed(Math.abs(med) < 10 ? 2 : 1)} ms` : '–';
  els.rate.textContent = NF0.format(rateWin.size);
  els.gaps.textContent = NF0.format(gapCount);
}

// ---------- startup ----------
async function fetchSymbols() {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 5000);
  try {
    const res = await fetch('./api/symbols', { signal: ctl.signal, cache: 'no-store' });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const list = await res.json();
    if (!Array.isArray(list)) throw new Error('not an array');
    return list.filter((s) => typeof s === 'string');
  } finally {
    clearTimeout(timer);
  }
}

function setKnown(list) {
  knownList = [...list].sort();
  known = new Set(list);
  knownByUpper = new Map(list.map((s) => [s.toUpperCase(), s]));
  refreshChrome();
}

async function loadSymbolsInBackground() {
  for (;;) {
    await new Promise((r) => setTimeout(r, 5000));
    try { return setKnown(await fetchSymbols()); } catch { /* keep trying */ }
  }
}

const conn = new Connection({
  onStatus: setStatus,
  onError: onServerError,
  onEvent: (ev, recvMs) => {
    if (ev.type === 'gap') {
      gapCount++;
      detail.handleGap(ev);
    } else if (ev.topic.startsWith('ticks.')) {
      applyQuote(ev, recvMs);
    } else if (detail.handleEvent(ev)) {
      rateWin.push(recvMs, 1);
    }
  },
});
const detail = new DetailPanel({ conn, root: els.detail, onChange: onDetailChange });

async function main() {
  els.form.addEventListener('submit', onSubmit);
  els.input.addEventListener('input', () => { if (!els.error.hidden) showError(''); });
  document.addEventListener('keydown', onKey);
  setStatus('connecting');
  setInterval(updateStats, 250);

  let list = null;
  try {
    list = await fetchSymbols();
    setKnown(list);
  } catch (e) {
    toast(`Could not load the symbol list (${e.message || e}); retrying.`, 'info');
    loadSymbolsInBackground();
  }

  const stored = loadStored();
  if (stored) {
    watch = [...new Set(stored.map(canon))];
    if (known) watch = watch.filter((s) => known.has(s));
  } else if (list) {
    watch = DEFAULTS.filter((s) => known.has(s));
    if (!watch.length) watch = list.slice(0, 5);
  } else {
    watch = [...DEFAULTS];
  }
  for (const s of watch) addRow(s);
  persist();
  refreshChrome();
  conn.subscribe(watch.map((s) => `ticks.${s}`));
  const open = DetailPanel.stored();
  if (open && rows.has(open)) detail.open(open);
  conn.start();
}

main();
