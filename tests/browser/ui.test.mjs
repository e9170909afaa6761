// Headless-Chromium test of Marquee's embedded trading UI.
//
//   MARQUEE_URL=http://127.0.0.1:8080 node --test tests/browser/
//
// Needs a running Marquee server at MARQUEE_URL and Chromium at
// /usr/bin/chromium (override with CHROMIUM_PATH). Writes a screenshot to
// tests/browser/test-results/ui.png.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { CHROME_ARGS, CHROMIUM, RESULTS, baseUrl, defaultWatchlist, getSymbols } from './harness.mjs';

const SCREENSHOT = path.join(RESULTS, 'ui.png');

const rowSel = (sym) => `tr[data-symbol="${sym}"]`;
const lastSel = (sym) => `${rowSel(sym)} [data-field="last"]`;

async function waitLive(page, timeout = 15_000) {
  try {
    await page.waitForFunction(
      () => document.querySelector('#conn-status')?.textContent.trim() === 'live', null, { timeout });
  } catch {
    const badge = await page.locator('#conn-status').textContent().catch(() => null);
    assert.fail(`connection badge did not say "live" within ${timeout} ms (it says ${JSON.stringify(badge)})`);
  }
}

async function waitForNumber(page, sel, timeout) {
  try {
    const h = await page.waitForFunction((s) => {
      const t = document.querySelector(s)?.textContent.trim() ?? '';
      return /^-?[\d,]+\.\d+$/.test(t) ? t : false;
    }, sel, { timeout });
    return await h.jsonValue();
  } catch {
    const t = await page.locator(sel).textContent().catch(() => null);
    assert.fail(`${sel} did not show a price within ${timeout} ms (it shows ${JSON.stringify(t)})`);
  }
}

test('trading UI: live badge, add symbol with live updates, unknown symbol, remove, persistence',
  { timeout: 120_000 }, async () => {
    const base = baseUrl();
    const symbols = await getSymbols(base);
    const defaults = defaultWatchlist(symbols);
    const extra = [...symbols].reverse().find((s) => !defaults.includes(s));
    assert.ok(extra, `need a symbol outside the default watchlist; /api/symbols has only ${symbols.join(',')}`);

    assert.ok(fs.existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (apt-get install chromium)`);
    fs.mkdirSync(RESULTS, { recursive: true });
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'marquee-ui-'));
    const problems = [];
    let context;
    let page;
    let shot = false;
    try {
      context = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM,
        headless: true,
        args: CHROME_ARGS,
        viewport: { width: 1280, height: 800 },
        timeout: 30_000,
      });
      context.setDefaultTimeout(10_000);
      context.setDefaultNavigationTimeout(15_000);
      page = context.pages()[0] ?? (await context.newPage());
      page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
      page.on('pageerror', (e) => problems.push(`uncaught exception: ${e.message}`));

      const resp = await page.goto(`${base}/`, { waitUntil: 'load' });
      assert.ok(resp && resp.ok(), `GET / returned HTTP ${resp && resp.status()}`);
      await waitLive(page);

      // Default watchlist rendered, each with a price from the snapshot.
      for (const s of defaults) {
        await page.locator(rowSel(s)).waitFor({ state: 'visible', timeout: 5_000 })
          .catch(() => assert.fail(`default watchlist row ${s} did not appear`));
      }
      await waitForNumber(page, lastSel(defaults[0]), 10_000);
      assert.equal(await page.locator(rowSel(extra)).count(), 0, `${extra} should not be on the default watchlist`);

      // Unknown symbol: inline error, no row.
      const bogus = 'ZZNOTASYMBOL9';
      await page.fill('#symbol-input', bogus);
      await page.press('#symbol-input', 'Enter');
      await page.locator('#symbol-error').waitFor({ state: 'visible', timeout: 5_000 })
        .catch(() => assert.fail('no inline error shown for an unknown symbol'));
      assert.match(await page.locator('#symbol-error').textContent(), /unknown/i);
      assert.equal(await page.locator(rowSel(bogus)).count(), 0, 'a row was added for an unknown symbol');

      // Add a symbol through the search box; its row appears and its last price moves.
      await page.fill('#symbol-input', extra);
      await page.click('#add-symbol');
      await page.locator(rowSel(extra)).waitFor({ state: 'visible', timeout: 5_000 })
        .catch(() => assert.fail(`row for ${extra} did not appear after adding it`));
      assert.ok(await page.locator('#symbol-error').isHidden(), 'inline error still shown after a valid add');
      const first = await waitForNumber(page, lastSel(extra), 10_000);
      try {
        await page.waitForFunction(([s, v]) => {
          const t = document.querySelector(s)?.textContent.trim();
          return t && t !== v && t !== '–';
        }, [lastSel(extra), first], { timeout: 15_000 });
      } catch {
        assert.fail(`last price of ${extra} stayed at ${first} for 15 s: no live ticks reached the UI`);
      }
      for (const f of ['bid', 'ask', 'change']) {
        assert.equal(await page.locator(`${rowSel(extra)} [data-field="${f}"]`).count(), 1, `row ${extra} lacks cell ${f}`);
      }

      // Latency readout shows a number once ticks flow.
      await page.waitForFunction(() => /\d+(\.\d+)?\s*ms/.test(document.querySelector('#latency')?.textContent ?? ''),
        null, { timeout: 5_000 }).catch(() => assert.fail('#latency never showed a value in ms'));

      // Remove a default row.
      const gone = defaults[0];
      await page.click(`${rowSel(gone)} button.remove`);
      await page.locator(rowSel(gone)).waitFor({ state: 'detached', timeout: 5_000 })
        .catch(() => assert.fail(`row ${gone} still present after clicking its remove button`));

      // The watchlist survives a reload (localStorage).
      await page.reload({ waitUntil: 'load' });
      await waitLive(page);
      await page.locator(rowSel(extra)).waitFor({ state: 'visible', timeout: 5_000 })
        .catch(() => assert.fail(`${extra} was not restored from localStorage after reload`));
      assert.equal(await page.locator(rowSel(gone)).count(), 0, `${gone} came back after reload`);
      await waitForNumber(page, lastSel(extra), 10_000);
      await page.waitForTimeout(1_500); // let sparklines fill for the screenshot
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
      shot = true;

      assert.deepEqual(problems, [], `the page logged errors:\n${problems.join('\n')}`);
    } finally {
      // On failure, keep a picture of where it stopped.
      if (page && !shot) await page.screenshot({ path: SCREENSHOT, fullPage: true, timeout: 5_000 }).catch(() => {});
      if (context) await context.close().catch(() => {});
      fs.rmSync(profile, { recursive: true, force: true });
    }
  });
