// Candlestick chart of the detail panel, built in the page from trade prints.
//
// `CandleSeries` folds prints into fixed-interval OHLCV candles by the print's
// own `ts` (publish time), so candles do not depend on when the page happened
// to receive them. `CandleChart` draws the series on a canvas: price grid and
// axis, candles, volume, the last price, time labels and an OHLCV legend for
// the candle under the pointer (or the newest one). It draws only when asked
// (once per animation frame at most, by the panel) and says through
// `invalidate` when a resize or the pointer needs a redraw.
//
// DOM hooks: the canvas gets `data-candles` (candles drawn), `data-last-close`
// and `data-interval-ms`.

import { fmtCompact, fmtTime } from './format.js';
import { fitCanvas } from './sparkline.js';

/** Candle length. */
export const CANDLE_MS = 5000;
/** Candles kept (30 min of 5 s candles); the chart shows as many as fit. */
export const MAX_CANDLES = 360;
// Horizontal space per candle: wide while there are few candles, down to
// MIN_SLOT_PX as the series fills the plot (at least MIN_SLOTS slots shown).
const MAX_SLOT_PX = 14;
const MIN_SLOT_PX = 6;
const MIN_SLOTS = 40;
const AXIS_W = 68;           // price axis on the right
const TIME_H = 22;           // time axis at the bottom
const LEGEND_H = 24;         // OHLCV legend at the top
const VOLUME_FRAC = 0.18;    // share of the plot height for volume bars
const LABEL_EVERY_MS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600].map((s) => s * 1000);
const C = {
  grid: 'rgba(139, 152, 168, 0.10)',
  axis: '#8b98a8',
  text: '#e6edf3',
  up: '#22c55e',
  down: '#ef4444',
  upVol: 'rgba(34, 197, 94, 0.30)',
  downVol: 'rgba(239, 68, 68, 0.30)',
  cross: 'rgba(230, 237, 243, 0.35)',
  tagText: '#0b0f14',
};
const FONT = '11px ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace';

export class CandleSeries {
  constructor(intervalMs = CANDLE_MS, max = MAX_CANDLES) {
    this.intervalMs = intervalMs;
    this.max = max;
    this.candles = []; // {t, o, h, l, c, v, n}, oldest first, t = bucket start (Unix ms)
  }

  clear() { this.candles = []; }

  get last() { return this.candles[this.candles.length - 1]; }

  /** Adds one print; returns whether the series changed. */
  add(tsMs, price, size) {
    if (!Number.isFinite(tsMs) || !Number.isFinite(price)) return false;
    const v = Number.isFinite(size) ? size : 0;
    const t = Math.floor(tsMs / this.intervalMs) * this.intervalMs;
    const last = this.last;
    if (!last || t > last.t) {
      this.candles.push({ t, o: price, h: price, l: price, c: price, v, n: 1 });
      if (this.candles.length > this.max) this.candles.splice(0, this.candles.length - this.max);
      return true;
    }
    // A print for an older bucket (a replay after reconnect, clock steps at the
    // source): widen that candle, but its close stays the bucket's newest print.
    for (let i = this.candles.length - 1; i >= 0; i--) {
      const k = this.candles[i];
      if (k.t < t) return false; // no candle for that bucket: too late to draw it
      if (k.t !== t) continue;
      if (price > k.h) k.h = price;
      if (price < k.l) k.l = price;
      if (k === last) k.c = price;
      k.v += v;
      k.n++;
      return true;
    }
    return false;
  }
}

// 1, 2, 2.5 or 5 times a power of ten, at least `raw`.
function niceStep(raw) {
  if (!(raw > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

export class CandleChart {
  /** `invalidate()` is called when the chart needs a redraw (resize, pointer). */
  constructor(canvas, series, invalidate = () => {}) {
    this.canvas = canvas;
    this.series = series;
    this.ctx = canvas.getContext('2d');
    this.w = 0;
    this.h = 0;
    this.dpr = 0;
    this.pointer = null; // {x, y} in CSS pixels while the pointer is over the chart
    canvas.dataset.intervalMs = String(series.intervalMs);
    // The CSS size from the last layout: reading clientWidth while drawing
    // would force a synchronous layout after the ladder's and tape's writes.
    this.cssW = 0;
    this.cssH = 0;
    new ResizeObserver(([e]) => {
      this.cssW = e.contentRect.width;
      this.cssH = e.contentRect.height;
      invalidate();
    }).observe(canvas);
    canvas.addEventListener('pointermove', (e) => { this.pointer = { x: e.offsetX, y: e.offsetY }; invalidate(); });
    canvas.addEventListener('pointerleave', () => { this.pointer = null; invalidate(); });
  }

  resize() {
    if (!fitCanvas(this, this.canvas, Math.round(this.cssW), Math.round(this.cssH))) return;
    // Resizing resets the context state. The font is set only here: setting it
    // makes Chrome resolve the canvas's style, a forced style recalc per frame.
    this.ctx.font = FONT;
    this.ctx.textBaseline = 'middle';
  }

  /** Draws the series; `digits` (a PriceDigits) formats prices, `label` heads the legend. */
  draw(digits, label = '', note = 'Waiting for trades…') {
    this.resize();
    const { ctx, w, h } = this;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const all = this.series.candles;
    const ds = this.canvas.dataset;
    if (!all.length || w < AXIS_W + 40 || h < LEGEND_H + TIME_H + 40) {
      ds.candles = '0';
      delete ds.lastClose;
      ctx.fillStyle = C.axis;
      ctx.textAlign = 'center';
      if (note) ctx.fillText(note, w / 2, h / 2);
      return;
    }

    // Geometry: the newest candle sits in the rightmost slot.
    const iv = this.series.intervalMs;
    const x1 = w - AXIS_W;
    const y0 = LEGEND_H;
    const y1 = h - TIME_H;
    const vTop = y1 - Math.round((y1 - y0) * VOLUME_FRAC);
    const pBot = vTop - 8;
    const slotPx = Math.max(MIN_SLOT_PX, Math.min(MAX_SLOT_PX, Math.floor((x1 - 4) / Math.max(all.length, MIN_SLOTS))));
    const slots = Math.max(1, Math.floor((x1 - 4) / slotPx));
    const lastT = all[all.length - 1].t;
    const slotOf = (t) => Math.round((lastT - t) / iv); // 0 = newest
    const cx = (slot) => x1 - 6 - slotPx / 2 - slot * slotPx;
    let first = all.length;
    while (first > 0 && slotOf(all[first - 1].t) < slots) first--;
    const shown = all.slice(first);

    let lo = Infinity;
    let hi = -Infinity;
    let vmax = 0;
    for (const k of shown) {
      if (k.l < lo) lo = k.l;
      if (k.h > hi) hi = k.h;
      if (k.v > vmax) vmax = k.v;
    }
    const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.001 || 1;
    lo -= pad;
    hi += pad;
    const y = (p) => y0 + ((hi - p) / (hi - lo)) * (pBot - y0);
    const crisp = (v) => Math.round(v) + 0.5;

    // Price grid and axis labels.
    const step = niceStep((hi - lo) / 5);
    ctx.lineWidth = 1;
    ctx.strokeStyle = C.grid;
    ctx.fillStyle = C.axis;
    ctx.textAlign = 'left';
    for (let p = Math.ceil(lo / step) * step; p <= hi; p += step) {
      const yy = crisp(y(p));
      ctx.beginPath();
      ctx.moveTo(0, yy);
      ctx.lineTo(x1, yy);
      ctx.stroke();
      ctx.fillText(digits.format(p), x1 + 8, yy);
    }

    // Time grid: a label every "nice" duration, at least ~90 px apart.
    const every = LABEL_EVERY_MS.find((d) => d >= iv && d % iv === 0 && (d / iv) * slotPx >= 90) || 3600_000;
    ctx.textAlign = 'center';
    const firstSlotT = lastT - (slots - 1) * iv;
    for (let t = Math.ceil(firstSlotT / every) * every; t <= lastT; t += every) {
      const xx = crisp(cx(slotOf(t)));
      if (xx < 30) continue; // its label would be cut by the edge
      ctx.beginPath();
      ctx.moveTo(xx, y0);
      ctx.lineTo(xx, y1);
      ctx.stroke();
      ctx.fillText(fmtTime(t), xx, y1 + TIME_H / 2);
    }
    ctx.strokeStyle = C.grid;
    ctx.beginPath();
    ctx.moveTo(0, crisp(vTop - 4));
    ctx.lineTo(x1, crisp(vTop - 4));
    ctx.stroke();

    // Volume, then candles (wick, then body).
    const bodyW = Math.max(1, Math.round(slotPx * 0.7));
    for (const k of shown) {
      if (!(vmax > 0)) break;
      const x = cx(slotOf(k.t));
      const vh = Math.max(1, (k.v / vmax) * (y1 - vTop));
      ctx.fillStyle = k.c >= k.o ? C.upVol : C.downVol;
      ctx.fillRect(Math.round(x - bodyW / 2), y1 - vh, bodyW, vh);
    }
    for (const k of shown) {
      const x = cx(slotOf(k.t));
      const col = k.c >= k.o ? C.up : C.down;
      ctx.strokeStyle = col;
      ctx.fillStyle = col;
      ctx.beginPath();
      ctx.moveTo(crisp(x), Math.round(y(k.h)));
      ctx.lineTo(crisp(x), Math.round(y(k.l)) + 1);
      ctx.stroke();
      const top = Math.round(y(Math.max(k.o, k.c)));
      const bot = Math.round(y(Math.min(k.o, k.c)));
      ctx.fillRect(Math.round(x - bodyW / 2), top, bodyW, Math.max(1, bot - top));
    }

    // Last price: dashed line and a tag on the axis.
    const last = shown[shown.length - 1];
    const lastCol = last.c >= last.o ? C.up : C.down;
    const ly = crisp(y(last.c));
    ctx.setLineDash([3, 3]);
    ctx.strokeStyle = lastCol;
    ctx.beginPath();
    ctx.moveTo(0, ly);
    ctx.lineTo(x1, ly);
    ctx.stroke();
    ctx.setLineDash([]);
    this.tag(digits.format(last.c), x1, ly, lastCol, C.tagText);

    // Crosshair and the candle under the pointer.
    let focus = last;
    const ptr = this.pointer;
    if (ptr && ptr.x < x1 && ptr.y > y0 && ptr.y < y1) {
      const slot = Math.round((x1 - 6 - slotPx / 2 - ptr.x) / slotPx);
      const t = lastT - slot * iv;
      focus = shown.find((k) => k.t === t) || null;
      ctx.strokeStyle = C.cross;
      ctx.setLineDash([2, 3]);
      ctx.beginPath();
      ctx.moveTo(crisp(cx(slot)), y0);
      ctx.lineTo(crisp(cx(slot)), y1);
      if (ptr.y < pBot) {
        ctx.moveTo(0, crisp(ptr.y));
        ctx.lineTo(x1, crisp(ptr.y));
      }
      ctx.stroke();
      ctx.setLineDash([]);
      if (ptr.y < pBot) this.tag(digits.format(hi - ((ptr.y - y0) / (pBot - y0)) * (hi - lo)), x1, crisp(ptr.y), '#334155', C.text);
    }
    this.legend(label, focus, digits);

    ds.candles = String(shown.length);
    ds.lastClose = String(last.c);
  }

  tag(text, x, yy, bg, fg) {
    const { ctx } = this;
    ctx.fillStyle = bg;
    ctx.fillRect(x + 1, yy - 9, AXIS_W - 2, 18);
    ctx.fillStyle = fg;
    ctx.textAlign = 'left';
    ctx.fillText(text, x + 8, yy);
  }

  legend(label, k, digits) {
    const { ctx } = this;
    ctx.textAlign = 'left';
    let x = 8;
    const put = (text, color) => {
      ctx.fillStyle = color;
      ctx.fillText(text, x, LEGEND_H / 2);
      x += ctx.measureText(text).width + 10;
    };
    put(`${label} · ${this.series.intervalMs / 1000}s`, C.axis);
    if (!k) return;
    const col = k.c >= k.o ? C.up : C.down;
    put(fmtTime(k.t), C.axis);
    for (const [name, v] of [['O', k.o], ['H', k.h], ['L', k.l], ['C', k.c]]) put(`${name} ${digits.format(v)}`, col);
    put(`V ${fmtCompact(k.v)}`, C.axis);
  }
}
