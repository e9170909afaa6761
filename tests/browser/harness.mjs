// What the browser tests share: where Chromium is and how it starts, the server under test, its symbols.
// Not a test file (node --test only runs *.test.mjs here).
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const RESULTS = path.join(HERE, 'test-results');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const CHROME_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic',
];
const DEFAULTS = ['AAPL', 'MSFT', 'NVDA', 'TSLA', 'AMZN'];

/** The server under test, from MARQUEE_URL, without a trailing slash. */
export function baseUrl() {
  const raw = process.env.MARQUEE_URL;
  assert.ok(raw, 'MARQUEE_URL is not set: point it at a running Marquee server, e.g. MARQUEE_URL=http://127.0.0.1:8080');
  return raw.replace(/\/+$/, '');
}

/** GET /api/symbols: a non-empty array of strings. */
export async function getSymbols(base) {
  let res;
  try {
    res = await fetch(`${base}/api/symbols`, { signal: AbortSignal.timeout(10_000) });
  } catch (e) {
    assert.fail(`GET ${base}/api/symbols failed (is the server running?): ${e.message}`);
  }
  assert.equal(res.status, 200, `GET /api/symbols returned HTTP ${res.status}`);
  const list = await res.json();
  assert.ok(Array.isArray(list) && list.length > 0 && list.every((s) => typeof s === 'string'),
    `GET /api/symbols should be a non-empty JSON array of strings, got ${JSON.stringify(list).slice(0, 200)}`);
  return list;
}

/** Same rule as app.js: the defaults that exist, else the first five symbols. */
export function defaultWatchlist(symbols) {
  const d = DEFAULTS.filter((s) => symbols.includes(s));
  return d.length ? d : symbols.slice(0, 5);
}
