// The depth ladder and the time-and-sales tape of the detail panel.
//
// Both are plain DOM views with no timers of their own: the panel calls
// `render` at most once per animation frame with the newest state, and they
// write only the cells whose text changed. Rows are made once and reused, so
// a book update costs a few text writes and a `transform` per level (no
// layout), however fast the feed.
//
// DOM hooks (tests rely on them): ladder rows are `.ladder-row` with
// `data-side="bid"|"ask"`, `data-level` (0 = best) and cells
// `[data-field=price|size|orders]`, best level first in DOM order on both
// sides (the ask column is drawn bottom-up by CSS). Tape rows are `tr` with
// `data-side="buy"|"sell"|"unknown"`, `data-symbol`, `data-seq`, `data-price`
// and cells `[data-field=time|price|size]`, newest first.

import { fmtSize, fmtTime } from './format.js';

/** Levels shown per side; the server sends `--depth` levels (default 10). */
export const LADDER_LEVELS = 10;
/** Prints kept on the tape. */
export const TAPE_ROWS = 50;
// The bar scale follows the biggest visible level up at once and down slowly,
// so bars do not all jump when one large level comes and goes.
const SCALE_DECAY = 0.97;

function cell(parent, field, tag = 'span') {
  const c = document.createElement(tag);
  c.dataset.field = field;
  parent.appendChild(c);
  return c;
}

class LadderSide {
  constructor(container, side) {
    this.container = container;
    this.side = side;
    this.rows = [];
  }

  row(i) {
    let r = this.rows[i];
    if (r) return r;
    const el = document.createElement('div');
    el.className = 'ladder-row';
    el.dataset.side = this.side;
    el.dataset.level = String(i);
    const bar = document.createElement('div');
    bar.className = 'bar';
    el.appendChild(bar);
    r = { el, bar, price: cell(el, 'price'), size: cell(el, 'size'), orders: cell(el, 'orders'), shown: {} };
    this.rows.push(r);
    return r;
  }

  /** Shows `levels` (best first); returns nothing. `scale` is the size of a full-width bar. */
  render(levels, scale, digits, lastPrice) {
    const n = Math.min(levels.length, LADDER_LEVELS);
    for (let i = 0; i < n; i++) {
      const [price, size, orders] = levels[i];
      const r = this.row(i);
      if (!r.el.isConnected) this.container.appendChild(r.el);
      const s = r.shown;
      const pt = digits.format(price);
      if (s.price !== pt) { r.price.textContent = pt; s.price = pt; }
      const st = fmtSize(size);
      if (s.size !== st) { r.size.textContent = st; s.size = st; }
      const ot = Number.isFinite(orders) && orders > 0 ? fmtSize(orders) : '';
      if (s.orders !== ot) { r.orders.textContent = ot; s.orders = ot; }
      const f = scale > 0 ? Math.min(1, size / scale) : 0;
      const ft = f.toFixed(3);
      if (s.bar !== ft) { r.bar.style.transform = `scaleX(${ft})`; s.bar = ft; }
      const traded = price === lastPrice;
      if (s.traded !== traded) { r.el.classList.toggle('traded', traded); s.traded = traded; }
    }
    for (let i = n; i < this.rows.length; i++) if (this.rows[i].el.isConnected) this.rows[i].el.remove();
  }

  clear() {
    for (const r of this.rows) r.el.remove();
    this.rows = [];
  }
}

function maxSize(levels, max) {
  const n = Math.min(levels.length, LADDER_LEVELS);
  for (let i = 0; i < n; i++) if (levels[i][1] > max) max = levels[i][1];
  return max;
}

/**
 * `root` holds `.ladder-asks`, `.ladder-spread` (with `[data-field=spread]`
 * and `[data-field=mid]`), `.ladder-bids` and `.ladder-note`.
 */
export class Ladder {
  constructor(root) {
    this.root = root;
    this.asks = new LadderSide(root.querySelector('.ladder-asks'), 'ask');
    this.bids = new LadderSide(root.querySelector('.ladder-bids'), 'bid');
    this.spread = root.querySelector('.ladder-spread [data-field="spread"]');
    this.mid = root.querySelector('.ladder-spread [data-field="mid"]');
    this.note = root.querySelector('.ladder-note');
    root.style.setProperty('--levels', String(LADDER_LEVELS));
    this.clear('Waiting for the book…');
  }

  /** Empties the ladder and shows `note` in its place. */
  clear(note) {
    this.asks.clear();
    this.bids.clear();
    this.scale = 0;
    this.spread.textContent = '–';
    this.mid.textContent = '–';
    this.note.textContent = note;
    this.note.hidden = !note;
    this.root.dataset.state = 'empty';
  }

  render(book, digits, lastPrice) {
    const bids = Array.isArray(book.bids) ? book.bids : [];
    const asks = Array.isArray(book.asks) ? book.asks : [];
    for (const l of bids) digits.see(l[0]);
    for (const l of asks) digits.see(l[0]);
    const max = maxSize(asks, maxSize(bids, 0));
    this.scale = Math.max(max, this.scale * SCALE_DECAY);
    this.asks.render(asks, this.scale, digits, lastPrice);
    this.bids.render(bids, this.scale, digits, lastPrice);
    const bb = bids.length ? bids[0][0] : NaN;
    const ba = asks.length ? asks[0][0] : NaN;
    const both = Number.isFinite(bb) && Number.isFinite(ba);
    this.spread.textContent = both ? digits.format(ba - bb) : '–';
    this.mid.textContent = both ? digits.format((ba + bb) / 2) : '–';
    this.note.hidden = bids.length + asks.length > 0;
    if (!this.note.hidden) this.note.textContent = 'The book is empty.';
    this.root.dataset.state = 'live';
  }
}

const SIDES = new Set(['buy', 'sell']);

export class Tape {
  /** `body` is the tape's `tbody`; `note` is shown while it has no rows. */
  constructor(body, note) {
    this.body = body;
    this.note = note;
    this.clear('Waiting for trades…');
  }

  clear(note) {
    this.body.replaceChildren();
    this.note.textContent = note;
    this.note.hidden = !note;
  }

  /** Prepends `trades` (oldest first), keeping the newest TAPE_ROWS rows. */
  render(trades, digits) {
    if (!trades.length) return;
    const from = Math.max(0, trades.length - TAPE_ROWS);
    for (let i = from; i < trades.length; i++) {
      const t = trades[i];
      // Recycle the oldest row once the tape is full: no garbage per print.
      const full = this.body.rows.length >= TAPE_ROWS;
      const tr = full ? this.body.lastElementChild : this.newRow();
      const side = SIDES.has(t.side) ? t.side : 'unknown';
      tr.dataset.side = side;
      tr.dataset.symbol = t.symbol;
      tr.dataset.seq = String(t.seq);
      tr.dataset.price = String(t.price);
      tr.cells[0].textContent = fmtTime(t.ts / 1e6, true);
      tr.cells[1].textContent = digits.format(t.price);
      tr.cells[2].textContent = fmtSize(t.size);
      tr.title = side === 'unknown' ? 'aggressor unknown' : side === 'buy' ? 'buyer lifted the offer' : 'seller hit the bid';
      this.body.insertBefore(tr, this.body.firstElementChild);
    }
    this.note.hidden = true;
  }

  newRow() {
    const tr = document.createElement('tr');
    cell(tr, 'time', 'td');
    cell(tr, 'price', 'td').className = 'num';
    cell(tr, 'size', 'td').className = 'num';
    return tr;
  }
}
