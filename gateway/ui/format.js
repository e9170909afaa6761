// Number and time formatting shared by the detail panel (ladder, tape, chart).
// Formatters are built once: Intl.NumberFormat construction is expensive and
// these run for every visible level and print, every frame.

const cache = new Map();
function nf(min, max = min) {
  const key = `${min}:${max}`;
  let f = cache.get(key);
  if (!f) {
    f = new Intl.NumberFormat('en-US', { minimumFractionDigits: min, maximumFractionDigits: max });
    cache.set(key, f);
  }
  return f;
}

/** Decimals needed to show `v` exactly (prices are exact shortest decimals on the wire), capped at 9. */
export function decimalsOf(v) {
  if (!Number.isFinite(v)) return 0;
  const m = /^-?\d+(?:\.(\d+))?(?:e([+-]\d+))?$/.exec(String(v)); // String(1.5e-7) is "1.5e-7"
  if (!m) return 0;
  const d = (m[1] ? m[1].length : 0) - Number(m[2] || 0);
  return Math.max(0, Math.min(9, d));
}

/**
 * Price digits for a symbol: only ever grows, so columns do not jitter when a
 * round price (187.2) follows a longer one (187.25). At least 2, 4 under 1.
 */
export class PriceDigits {
  constructor() { this.reset(); }
  reset() { this.digits = 2; }
  see(v) {
    if (!Number.isFinite(v)) return;
    const d = Math.max(decimalsOf(v), Math.abs(v) < 1 ? 4 : 2);
    if (d > this.digits) this.digits = d;
  }
  format(v) { return Number.isFinite(v) ? nf(this.digits).format(v) : '–'; }
}

/** Sizes: integers with separators, fractional sizes (crypto) with up to 4 decimals. */
export function fmtSize(v) {
  if (!Number.isFinite(v)) return '–';
  return Number.isInteger(v) ? nf(0).format(v) : nf(0, 4).format(v);
}

/** Compact sizes for axis and legend: 12.3K, 4.5M. */
export function fmtCompact(v) {
  if (!Number.isFinite(v)) return '–';
  const a = Math.abs(v);
  if (a >= 1e9) return nf(0, 1).format(v / 1e9) + 'B';
  if (a >= 1e6) return nf(0, 1).format(v / 1e6) + 'M';
  if (a >= 1e4) return nf(0, 1).format(v / 1e3) + 'K';
  return fmtSize(v);
}

const pad2 = (n) => String(n).padStart(2, '0');

/** Local wall-clock time of a Unix-ms instant: `HH:MM:SS`, or `HH:MM:SS.mmm` with `ms`. */
export function fmtTime(unixMs, ms = false) {
  if (!Number.isFinite(unixMs)) return '–';
  const d = new Date(unixMs);
  const s = `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  return ms ? `${s}.${String(d.getMilliseconds()).padStart(3, '0')}` : s;
}
