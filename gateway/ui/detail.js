// The symbol detail panel: depth ladder, time-and-sales tape and candle chart
// for one symbol, fed by its `book.<SYM>` and `trades.<SYM>` topics on the
// page's one connection.
//
// Conflation in the page: events only update state (the newest book replaces
// the previous one, prints queue for the tape and fold into candles at once);
// the DOM and the canvas are written at most once per animation frame, so the
// page keeps up with the full feed rate. While the tab is hidden no frames
// run, and the queue of prints is cut to what the tape can show.
//
// Switching symbols unsubscribes the old topics before subscribing the new
// ones; events of the old topics still in flight are dropped by the
// connection (it only delivers topics it is subscribed to) and, belt and
// braces, by the topic check in `handleEvent`.
//
// DOM hooks: `#detail[data-symbol]` (empty while closed), header cells
// `#detail [data-field=last|bid|ask|volume|prints|gaps]`, plus those of
// depth.js (`#ladder`, `#tape`) and chart.js (`#chart`).

import { Ladder, Tape, TAPE_ROWS } from './depth.js';
import { CandleChart, CandleSeries } from './chart.js';
import { PriceDigits, fmtCompact, fmtSize } from './format.js';

const STORAGE_KEY = 'marquee.detail.v1';

export class DetailPanel {
  /** `onChange(symbol | null)` is called after the panel opens, switches or closes. */
  constructor({ conn, root, onChange = () => {} }) {
    this.conn = conn;
    this.root = root;
    this.onChange = onChange;
    const q = (sel) => root.querySelector(sel);
    this.els = { symbol: q('#detail-symbol'), close: q('#detail-close') };
    this.cells = {};
    for (const c of root.querySelectorAll('.detail-stats [data-field]')) this.cells[c.dataset.field] = c;
    this.digits = new PriceDigits();
    this.ladder = new Ladder(q('#ladder'));
    this.tape = new Tape(q('#tape'), q('#tape-note'));
    this.series = new CandleSeries();
    this.chart = new CandleChart(q('#chart'), this.series, () => { this.chartDirty = true; this.schedule(); });
    this.sym = null;
    this.frameQueued = false;
    this.els.close.addEventListener('click', () => this.close());
    this.reset();
  }

  get symbol() { return this.sym; }

  /** The symbol the panel showed last session, if any. */
  static stored() {
    try { return localStorage.getItem(STORAGE_KEY); } catch { return null; }
  }

  open(sym) {
    if (sym === this.sym) return;
    if (this.sym) this.conn.unsubscribe(topicsOf(this.sym));
    this.sym = sym;
    this.reset();
    this.root.dataset.symbol = sym;
    this.root.hidden = false;
    this.els.symbol.textContent = sym;
    // One subscribe per topic: a source may publish trades but no book (CSV,
    // DBN trades), and a subscribe is all or nothing.
    for (const t of topicsOf(sym)) this.conn.subscribe([t]);
    this.persist();
    this.onChange(sym);
    this.schedule();
  }

  close() {
    if (!this.sym) return;
    this.conn.unsubscribe(topicsOf(this.sym));
    this.sym = null;
    this.reset();
    this.root.dataset.symbol = '';
    this.root.hidden = true;
    this.persist();
    this.onChange(null);
  }

  reset() {
    this.book = null;
    this.bookDirty = false;
    this.prints = [];            // received, not yet on the tape; oldest first
    this.chartDirty = true;
    this.statsDirty = true;
    this.stats = { last: NaN, dir: 'flat', volume: 0, prints: 0, gaps: 0 };
    this.chartNote = 'Waiting for trades…';
    this.digits.reset();
    this.series.clear();
    this.ladder.clear('Waiting for the book…');
    this.tape.clear('Waiting for trades…');
  }

  persist() {
    try {
      if (this.sym) localStorage.setItem(STORAGE_KEY, this.sym);
      else localStorage.removeItem(STORAGE_KEY);
    } catch { /* private mode */ }
  }

  /** Takes a `book`/`trade` event or snapshot of the open symbol; returns false for anything else. */
  handleEvent(ev) {
    if (!this.sym) return false;
    if (ev.topic === `book.${this.sym}`) {
      this.book = ev;
      this.bookDirty = true;
      this.statsDirty = true;
    } else if (ev.topic === `trades.${this.sym}`) {
      this.handleTrade(ev);
    } else {
      return false;
    }
    this.schedule();
    return true;
  }

  handleTrade(ev) {
    const price = ev.price;
    if (!Number.isFinite(price)) return;
    const ts = Number(ev.ts); // Unix ns; a double keeps it to well under a ms
    const s = this.stats;
    if (Number.isFinite(s.last) && price !== s.last) s.dir = price > s.last ? 'up' : 'down';
    s.last = price;
    if (Number.isFinite(ev.size)) s.volume += ev.size;
    s.prints++;
    this.statsDirty = true;
    this.digits.see(price);
    if (this.series.add(ts / 1e6, price, ev.size)) this.chartDirty = true;
    this.prints.push({ symbol: this.sym, seq: ev.seq, ts, price, size: ev.size, side: ev.side });
    // No frame runs while the tab is hidden: keep only what the tape can show.
    if (this.prints.length > 2 * TAPE_ROWS) this.prints.splice(0, this.prints.length - TAPE_ROWS);
  }

  /** Counts a `gap` of the open symbol's topics (the newest value follows it). */
  handleGap(ev) {
    if (!this.sym || (ev.topic !== `book.${this.sym}` && ev.topic !== `trades.${this.sym}`)) return false;
    this.stats.gaps++;
    this.statsDirty = true;
    this.schedule();
    return true;
  }

  /**
   * Takes a refused subscribe of book/trades topics (returns true): the topics
   * are dropped and the panel says why instead of waiting forever.
   */
  handleSubscribeError(ev, req) {
    if (!req || req.op !== 'subscribe' || !Array.isArray(req.topics)) return false;
    if (!req.topics.every((t) => t.startsWith('book.') || t.startsWith('trades.'))) return false;
    this.conn.forget(req.topics);
    const why = ev.code === 'unknown_topic' ? null : ev.message || ev.code;
    for (const t of req.topics) {
      if (t === `book.${this.sym}`) this.ladder.clear(why || `No depth data for ${this.sym}.`);
      if (t === `trades.${this.sym}`) {
        this.tape.clear(why || `No trades for ${this.sym}.`);
        this.chartNote = why || `No trades for ${this.sym}.`;
        this.chartDirty = true;
        this.schedule();
      }
    }
    return true;
  }

  schedule() {
    if (this.frameQueued) return;
    this.frameQueued = true;
    requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frameQueued = false;
    if (!this.sym) return;
    // Canvas first, then the DOM writes: nothing in between forces a style recalc.
    if (this.chartDirty) {
      this.chart.draw(this.digits, this.sym, this.chartNote);
      this.chartDirty = false;
    }
    if (this.bookDirty) {
      this.ladder.render(this.book, this.digits, this.stats.last);
      this.bookDirty = false;
    }
    if (this.prints.length) {
      this.tape.render(this.prints, this.digits);
      this.prints = [];
    }
    if (this.statsDirty) {
      this.renderStats();
      this.statsDirty = false;
    }
  }

  renderStats() {
    const s = this.stats;
    const set = (field, text, cls) => {
      const c = this.cells[field];
      if (!c) return;
      if (c.textContent !== text) c.textContent = text;
      if (cls !== undefined && c.dataset.dir !== cls) {
        c.classList.remove('up', 'down', 'flat');
        c.classList.add(cls);
        c.dataset.dir = cls;
      }
    };
    const level = (side) => {
      const l = this.book && Array.isArray(this.book[side]) ? this.book[side][0] : null;
      return l ? `${this.digits.format(l[0])} × ${fmtSize(l[1])}` : '–';
    };
    set('last', this.digits.format(s.last), s.dir);
    set('bid', level('bids'));
    set('ask', level('asks'));
    set('volume', s.prints ? fmtCompact(s.volume) : '–');
    set('prints', fmtSize(s.prints));
    set('gaps', fmtSize(s.gaps));
  }
}

function topicsOf(sym) {
  return [`book.${sym}`, `trades.${sym}`];
}
