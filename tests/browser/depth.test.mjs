// Headless-Chromium test of the trading UI's detail panel: depth ladder,
// time-and-sales tape and candle chart of the clicked watchlist symbol.
//
//   MARQUEE_URL=http://127.0.0.1:8080 node --test tests/browser/depth.test.mjs
//
// Needs a running Marquee server at MARQUEE_URL whose feed publishes
// `book.*` and `trades.*` (the synthetic market does), and Chromium at
// /usr/bin/chromium (override with CHROMIUM_PATH). Writes a screenshot to
// tests/browser/test-results/depth.png. Besides the DOM, the test watches the
// page's WebSocket frames, to check that switching symbols really
// unsubscribes the old topics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { CHROME_ARGS, CHROMIUM, RESULTS, baseUrl, defaultWatchlist, getSymbols } from './harness.mjs';

const SCREENSHOT = path.join(RESULTS, 'depth.png');
const TAPE_ROWS = 50;

/** Waits for `fn(arg)` in the page to be truthy, failing with `what` (and the last value of `show`) on timeout. */
async function waitFor(page, what, fn, arg, timeout, show) {
  try {
    const h = await page.waitForFunction(fn, arg, { timeout });
    return await h.jsonValue();
  } catch {
    const seen = show ? await page.evaluate(show, arg).catch(() => null) : null;
    assert.fail(`${what} within ${timeout} ms${show ? ` (last seen: ${JSON.stringify(seen)})` : ''}`);
  }
}

const num = (t) => (/^-?[\d,]*\.?\d+$/.test(t) ? Number(t.replace(/,/g, '')) : NaN);

// The ladder as the page shows it: per side, DOM order, with the raw texts.
function readLadder(page) {
  return page.evaluate(() => {
    const side = (s) => [...document.querySelectorAll(`#ladder .ladder-row[data-side="${s}"]`)].map((r) => ({
      level: Number(r.dataset.level),
      price: r.querySelector('[data-field="price"]')?.textContent.trim(),
      size: r.querySelector('[data-field="size"]')?.textContent.trim(),
      orders: r.querySelector('[data-field="orders"]')?.textContent.trim(),
    }));
    return { bid: side('bid'), ask: side('ask') };
  });
}

function readTape(page) {
  return page.evaluate(() => [...document.querySelectorAll('#tape tr')].map((r) => ({
    symbol: r.dataset.symbol, side: r.dataset.side, seq: Number(r.dataset.seq), price: Number(r.dataset.price),
    text: r.querySelector('[data-field="price"]')?.textContent.trim(),
  })));
}

function assertLadder(ladder, sym) {
  for (const side of ['bid', 'ask']) {
    const rows = ladder[side];
    assert.ok(rows.length > 0, `${sym}: the ladder has no ${side} rows`);
    rows.forEach((r, i) => {
      assert.equal(r.level, i, `${sym}: ${side} rows are not in level order: ${JSON.stringify(rows)}`);
      assert.ok(Number.isFinite(num(r.price)), `${sym}: ${side} level ${i} price ${JSON.stringify(r.price)} is not a number`);
      assert.ok(num(r.size) > 0, `${sym}: ${side} level ${i} size ${JSON.stringify(r.size)} is not a positive number`);
      assert.ok(r.orders === '' || Number.isInteger(num(r.orders)), `${sym}: ${side} level ${i} orders ${JSON.stringify(r.orders)}`);
    });
  }
  const bids = ladder.bid.map((r) => num(r.price));
  const asks = ladder.ask.map((r) => num(r.price));
  assert.ok(bids[0] < asks[0], `${sym}: best bid ${bids[0]} is not below best ask ${asks[0]}`);
  for (let i = 1; i < bids.length; i++) assert.ok(bids[i] < bids[i - 1], `${sym}: bids not descending: ${bids}`);
  for (let i = 1; i < asks.length; i++) assert.ok(asks[i] > asks[i - 1], `${sym}: asks not ascending: ${asks}`);
}

/** Records the page's /ws traffic: ops sent, acks received, and per topic the last frame carrying it. */
function watchSocket(page) {
  const log = { sent: [], ackFrame: new Map(), lastFrame: new Map(), frames: 0 };
  page.on('websocket', (ws) => {
    if (!new URL(ws.url()).pathname.endsWith('/ws')) return;
    ws.on('framesent', (f) => {
      try { log.sent.push(JSON.parse(f.payload)); } catch { /* not ours */ }
    });
    ws.on('framereceived', (f) => {
      if (typeof f.payload !== 'string') return;
      const n = ++log.frames;
      let batch;
      try { batch = JSON.parse(f.payload); } catch { return; }
      for (const ev of Array.isArray(batch) ? batch : [batch]) {
        if (ev.type === 'ack') log.ackFrame.set(ev.id, n);
        else if (typeof ev.topic === 'string' && ev.type !== 'gap') log.lastFrame.set(ev.topic, n);
      }
    });
  });
  return log;
}

function findOp(log, op, topics) {
  return log.sent.find((m) => m.op === op && topics.every((t) => m.topics?.includes(t)));
}

async function openSymbol(page, sym) {
  await page.click(`tr[data-symbol="${sym}"] td.sym`);
  await waitFor(page, `#detail did not show ${sym} after clicking its row`,
    (s) => {
      const d = document.querySelector('#detail');
      return d && !d.hidden && d.dataset.symbol === s && document.querySelector('#detail-symbol')?.textContent === s;
    }, sym, 5_000, () => document.querySelector('#detail')?.dataset.symbol);
  await waitFor(page, `the ladder of ${sym} got no bid and ask rows`,
    () => document.querySelector('#ladder .ladder-row[data-side="bid"]') && document.querySelector('#ladder .ladder-row[data-side="ask"]'),
    null, 10_000, () => document.querySelector('#ladder')?.textContent);
  await waitFor(page, `the tape of ${sym} got no prints`,
    (s) => document.querySelector(`#tape tr[data-symbol="${s}"]`), sym, 15_000,
    () => document.querySelector('.tape-wrap')?.textContent);
}

test('detail panel: depth ladder, tape and candles of the clicked symbol; switching and Escape unsubscribe',
  { timeout: 120_000 }, async () => {
    const base = baseUrl();
    const watch = defaultWatchlist(await getSymbols(base));
    assert.ok(watch.length >= 2, `need two symbols on the default watchlist, got ${watch}`);
    const [first, second] = watch;

    assert.ok(fs.existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (apt-get install chromium)`);
    fs.mkdirSync(RESULTS, { recursive: true });
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'marquee-depth-'));
    const problems = [];
    let context;
    let page;
    let shot = false;
    try {
      context = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM, headless: true, args: CHROME_ARGS,
        viewport: { width: 1280, height: 900 }, timeout: 30_000,
      });
      context.setDefaultTimeout(10_000);
      page = context.pages()[0] ?? (await context.newPage());
      page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
      page.on('pageerror', (e) => problems.push(`uncaught exception: ${e.message}`));
      const wsLog = watchSocket(page);

      const resp = await page.goto(`${base}/`, { waitUntil: 'load' });
      assert.ok(resp && resp.ok(), `GET / returned HTTP ${resp && resp.status()}`);
      await waitFor(page, 'the connection badge did not say "live"',
        () => document.querySelector('#conn-status')?.textContent.trim() === 'live', null, 15_000,
        () => document.querySelector('#conn-status')?.textContent);
      assert.ok(await page.locator('#detail').isHidden(), '#detail is shown before any symbol was clicked');

      // Open the first symbol: a sane ladder.
      await openSymbol(page, first);
      assertLadder(await readLadder(page), first);
      assert.ok(findOp(wsLog, 'subscribe', [`book.${first}`]) && findOp(wsLog, 'subscribe', [`trades.${first}`]),
        `no subscribe for book.${first} and trades.${first} was sent`);

      // The ladder updates live.
      const before = await page.locator('#ladder').textContent();
      await waitFor(page, `the ladder of ${first} did not change`,
        (b) => document.querySelector('#ladder').textContent !== b, before, 10_000);
      assertLadder(await readLadder(page), first);

      // The tape gains prints, newest first, bounded, all of this symbol.
      const newest = (await readTape(page))[0].seq;
      await waitFor(page, `no newer print than seq ${newest} reached the tape of ${first}`,
        (n) => Number(document.querySelector('#tape tr')?.dataset.seq) > n, newest, 15_000);
      let tape = await readTape(page);
      assert.ok(tape.length <= TAPE_ROWS, `the tape has ${tape.length} rows, more than ${TAPE_ROWS}`);
      for (const [i, r] of tape.entries()) {
        assert.equal(r.symbol, first, `tape row ${i} is of ${r.symbol}, not ${first}`);
        assert.ok(['buy', 'sell', 'unknown'].includes(r.side), `tape row ${i} has side ${r.side}`);
        assert.ok(Number.isFinite(num(r.text)) && r.price > 0, `tape row ${i} price ${r.text} is not a number`);
        if (i) assert.ok(r.seq < tape[i - 1].seq, `tape not newest first at row ${i}: ${tape.map((t) => t.seq)}`);
      }

      // Candles: drawn, their last close is the newest print, and a new one starts as time passes.
      const chart = await page.evaluate(() => {
        const c = document.querySelector('#chart');
        const { data } = c.getContext('2d').getImageData(0, 0, c.width, c.height);
        let up = 0;
        let down = 0;
        for (let i = 0; i < data.length; i += 4) {
          const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
          if (r === 34 && g === 197 && b === 94) up++;
          else if (r === 239 && g === 68 && b === 68) down++;
        }
        return {
          candles: Number(c.dataset.candles), lastClose: Number(c.dataset.lastClose),
          newest: Number(document.querySelector('#tape tr')?.dataset.price),
          intervalMs: Number(c.dataset.intervalMs), up, down,
        };
      });
      assert.ok(chart.candles > 0, `#chart data-candles is ${chart.candles}`);
      assert.ok(chart.up + chart.down > 20, `the chart canvas shows no candle pixels: ${JSON.stringify(chart)}`);
      assert.equal(chart.lastClose, chart.newest, 'the last candle does not close at the newest print');
      await waitFor(page, `the chart of ${first} did not start a new candle within two intervals`,
        (n) => Number(document.querySelector('#chart').dataset.candles) > n, chart.candles,
        2 * chart.intervalMs + 5_000, () => document.querySelector('#chart').dataset.candles);

      // Switch to the second symbol: the old topics are unsubscribed and nothing of them shows.
      await openSymbol(page, second);
      const unsub = findOp(wsLog, 'unsubscribe', [`book.${first}`, `trades.${first}`]);
      assert.ok(unsub, `switching to ${second} sent no unsubscribe of book.${first} and trades.${first}`);
      assert.ok(findOp(wsLog, 'subscribe', [`book.${second}`]) && findOp(wsLog, 'subscribe', [`trades.${second}`]),
        `no subscribe for book.${second} and trades.${second} was sent`);
      await page.waitForTimeout(2_000);
      const ackAt = wsLog.ackFrame.get(unsub.id);
      assert.ok(ackAt, `the unsubscribe (id ${unsub.id}) was not acked`);
      for (const t of [`book.${first}`, `trades.${first}`]) {
        assert.ok(!(wsLog.lastFrame.get(t) > ackAt), `${t} events still arrived after its unsubscribe was acked`);
      }
      assertLadder(await readLadder(page), second);
      tape = await readTape(page);
      const stray = tape.filter((r) => r.symbol !== second);
      assert.deepEqual(stray, [], `the tape still shows prints of other symbols after switching to ${second}`);
      assert.ok(await page.locator(`tr[data-symbol="${second}"].selected`).count() === 1, `row ${second} is not marked selected`);
      assert.ok(await page.locator(`tr[data-symbol="${first}"].selected`).count() === 0, `row ${first} is still marked selected`);
      await waitFor(page, `the chart of ${second} drew no candles`,
        () => Number(document.querySelector('#chart').dataset.candles) > 0, null, 5_000);

      await page.waitForTimeout(1_500); // a few more candles and prints for the picture
      await page.evaluate(() => window.scrollTo(0, 0)); // the sticky top bar belongs at the top of the picture
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
      shot = true;

      // Escape closes the panel and unsubscribes.
      await page.keyboard.press('Escape');
      await waitFor(page, 'Escape did not close #detail',
        () => document.querySelector('#detail').hidden && document.querySelector('#detail').dataset.symbol === '', null, 5_000);
      await page.waitForTimeout(300);
      assert.ok(findOp(wsLog, 'unsubscribe', [`book.${second}`, `trades.${second}`]),
        `closing the panel sent no unsubscribe of book.${second} and trades.${second}`);

      assert.deepEqual(problems, [], `the page logged errors:\n${problems.join('\n')}`);
    } finally {
      if (page && !shot) await page.screenshot({ path: SCREENSHOT, fullPage: true, timeout: 5_000 }).catch(() => {});
      if (context) await context.close().catch(() => {});
      fs.rmSync(profile, { recursive: true, force: true });
    }
  });
