// Headless-Chromium test of the auction demo page: two browser contexts
// (alice and bob) bid against each other on one lot.
//
//   MARQUEE_URL=http://127.0.0.1:8080 node --test tests/browser/
//
// Needs a running Marquee server with short demo lots (scripts/test starts it
// with --lot-duration 20s --anti-snipe 2s) and Chromium at /usr/bin/chromium
// (override with CHROMIUM_PATH). Writes screenshots to tests/browser/test-results/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { CHROME_ARGS, CHROMIUM, RESULTS, baseUrl } from './harness.mjs';


// An open lot that ends soon enough for the test to see it close, but not so
// soon that the bids could miss it. Replacement lots keep coming, so wait.
async function pickLot(base) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const lots = await (await fetch(`${base}/api/lots`)).json();
    const now = Date.now();
    const ok = lots
      .filter((l) => l.state === 'open' && l.ends_at - now > 8_000 && l.ends_at - now < 45_000)
      .sort((a, b) => a.ends_at - b.ends_at);
    if (ok.length) return ok[0];
    assert.ok(Date.now() < deadline, `no open lot ending in 8-45 s: ${JSON.stringify(lots)}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function loggedIn(browser, base, name) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`[${name}] page error: ${e.message}`));
  await page.goto(`${base}/auction.html`);
  await page.fill('#login-name', name);
  await page.click('#login');
  await page.waitForFunction((n) => document.querySelector('#whoami')?.textContent.includes(n), name);
  await page.waitForFunction(() => document.querySelector('#conn-status')?.textContent.trim() === 'live');
  return { context, page };
}

const card = (lot) => `article[data-lot="${lot}"]`;

test('auction page: alice and bob bid, outbid toast to the right one, winner banner', { timeout: 150_000 }, async () => {
  const base = baseUrl();
  fs.mkdirSync(RESULTS, { recursive: true });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROME_ARGS });
  try {
    // The trading screen links here.
    const trading = await browser.newPage();
    await trading.goto(`${base}/`);
    assert.match(await trading.getAttribute('#auction-link', 'href'), /auction/);
    await trading.close();

    const lot = await pickLot(base);
    const alice = await loggedIn(browser, base, 'alice');
    const bob = await loggedIn(browser, base, 'bob');
    for (const { page } of [alice, bob]) await page.waitForSelector(`${card(lot.lot)} [data-action="bid"]:not([disabled])`);

    // Alice bids the minimum: pending, then accepted by push.
    await alice.page.fill(`${card(lot.lot)} [data-field="amount"]`, lot.min_bid);
    await alice.page.click(`${card(lot.lot)} [data-action="bid"]`);
    await alice.page.waitForSelector(`${card(lot.lot)} [data-field="my-bid"][data-status="accepted"]`);
    // Bob sees alice's bid appear.
    await bob.page.waitForFunction((sel) => document.querySelector(sel)?.textContent === 'alice',
      `${card(lot.lot)} [data-field="leader"]`);

    // Bob outbids well above the reserve; alice (only alice) gets the outbid toast.
    await bob.page.fill(`${card(lot.lot)} [data-field="amount"]`, '100000');
    await bob.page.click(`${card(lot.lot)} [data-action="bid"]`);
    await bob.page.waitForSelector(`${card(lot.lot)} [data-field="my-bid"][data-status="accepted"]`);
    await alice.page.waitForSelector('.toast.outbid');
    assert.match(await alice.page.textContent('.toast.outbid'), /bob/);
    await alice.page.waitForFunction((sel) => document.querySelector(sel)?.textContent === 'bob',
      `${card(lot.lot)} [data-field="leader"]`);
    assert.equal(await bob.page.locator('.toast.outbid').count(), 0, 'bob was told he was outbid');

    // A bid below the minimum is rejected with a reason.
    await alice.page.fill(`${card(lot.lot)} [data-field="amount"]`, lot.min_bid);
    await alice.page.click(`${card(lot.lot)} [data-action="bid"]`);
    await alice.page.waitForSelector(`${card(lot.lot)} [data-field="my-bid"][data-status="rejected"]`);
    assert.match(await alice.page.textContent(`${card(lot.lot)} [data-field="my-bid"]`), /bid_too_low/);

    // The lot closes: bob sees the winner banner, alice does not.
    await bob.page.waitForSelector('#banner:not([hidden])', { timeout: 90_000 });
    assert.match(await bob.page.textContent('#banner'), new RegExp(`You won ${lot.title}`));
    await alice.page.waitForFunction((sel) => document.querySelector(sel)?.textContent === 'sold',
      `${card(lot.lot)} [data-field="state"]`, { timeout: 10_000 });
    assert.equal(await alice.page.isHidden('#banner'), true, 'alice did not win');
    await bob.page.screenshot({ path: path.join(RESULTS, 'auction-bob.png') });
    await alice.context.close();
    await bob.context.close();
  } finally {
    await browser.close();
  }
});
