// Headless Chromium runs a page that uses the official SignalR browser client
// (@microsoft/signalr, dist/browser/signalr.min.js) against Marquee's hub at
// /hubs/market, cross-origin: the page comes from the fake origin
// http://app.test, served entirely by Playwright routing, and renders AAPL and
// MSFT ticks in a table. Once with the client's default transport choice
// (WebSockets), then forced to long polling and to Server-Sent Events, and once with the MessagePack hub protocol.
//
//   cd tests/browser && npm ci
//   MARQUEE_URL=http://127.0.0.1:8080 node --test signalr-browser.test.mjs
//
// The server must allow the page's origin with credentials: start it with
// --cors-origins http://app.test. Needs Chromium at /usr/bin/chromium (override
// with CHROMIUM_PATH). Writes screenshots to tests/browser/test-results/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const RESULTS = path.join(HERE, 'test-results');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const SIGNALR_JS = path.join(HERE, 'node_modules', '@microsoft', 'signalr', 'dist', 'browser', 'signalr.min.js');
const MSGPACK_JS = path.join(HERE, 'node_modules', '@microsoft', 'signalr-protocol-msgpack', 'dist', 'browser',
  'signalr-protocol-msgpack.min.js');
const ORIGIN = 'http://app.test';
const CHROME_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic',
  // http://app.test is a non-secure "public" origin and the server is on
  // loopback: Chromium's Local Network Access checks block every such request
  // ("The request client is not a secure context and the resource is in
  // more-private address space `loopback`") before CORS is even consulted.
  '--disable-features=LocalNetworkAccessChecks',
];

function baseUrl() {
  const raw = process.env.MARQUEE_URL;
  assert.ok(raw, 'MARQUEE_URL is not set: point it at a running Marquee server, e.g. MARQUEE_URL=http://127.0.0.1:8080');
  return raw.replace(/\/+$/, '');
}

// The app: ?server=<Marquee base URL>[&transport=LongPolling|ServerSentEvents][&protocol=messagepack].
const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>SignalR ticks</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 2em; }
  table { border-collapse: collapse; min-width: 20em; }
  th, td { border: 1px solid #ccc; padding: .3em .8em; text-align: right; }
  th:first-child, td:first-child { text-align: left; }
</style>
</head>
<body>
<h1>SignalR ticks</h1>
<p>status: <span id="status">starting</span> <span id="transport"></span></p>
<table>
  <thead><tr><th>symbol</th><th>price</th><th>seq</th></tr></thead>
  <tbody>
    <tr data-symbol="AAPL"><td>AAPL</td><td data-field="price"></td><td data-field="seq"></td></tr>
    <tr data-symbol="MSFT"><td>MSFT</td><td data-field="price"></td><td data-field="seq"></td></tr>
  </tbody>
</table>
<script src="/signalr.js"></script>
<script src="/signalr-protocol-msgpack.js"></script>
<script>
(async () => {
  const status = document.getElementById('status');
  const q = new URLSearchParams(location.search);
  const server = q.get('server');
  const opts = {};
  const forced = q.get('transport');
  if (forced === 'LongPolling' || forced === 'ServerSentEvents') opts.transport = signalR.HttpTransportType[forced];
  document.getElementById('transport').textContent = q.get('transport') ? '(' + q.get('transport') + ')' : '';
  const builder = new signalR.HubConnectionBuilder()
    .withUrl(server + '/hubs/market', opts)
    .configureLogging(signalR.LogLevel.Warning);
  if (q.get('protocol') === 'messagepack') builder.withHubProtocol(new signalR.protocols.msgpack.MessagePackHubProtocol());
  const conn = builder.build();
  window.hub = conn;
  window.ticks = 0;
  conn.on('tick', (t) => {
    window.ticks++;
    const row = document.querySelector('tr[data-symbol="' + t.symbol + '"]');
    if (!row) return;
    row.querySelector('[data-field="price"]').textContent = Number(t.price).toFixed(2);
    row.querySelector('[data-field="seq"]').textContent = String(t.seq);
  });
  conn.onclose((e) => { status.textContent = e ? 'closed: ' + e.message : 'closed'; });
  try {
    await conn.start();
    await conn.invoke('Subscribe', ['ticks.AAPL', 'ticks.MSFT']);
    status.textContent = 'connected';
  } catch (e) {
    status.textContent = 'error: ' + e.message;
  }
})();
</script>
</body>
</html>
`;

const priceSel = (sym) => `tr[data-symbol="${sym}"] [data-field="price"]`;
const seqSel = (sym) => `tr[data-symbol="${sym}"] [data-field="seq"]`;

async function runPage({ transport, protocol, screenshot }) {
  const base = baseUrl();
  assert.ok(fs.existsSync(SIGNALR_JS), `${SIGNALR_JS} is missing: run npm ci in tests/browser`);
  fs.mkdirSync(RESULTS, { recursive: true });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROME_ARGS });
  try {
    const context = await browser.newContext();
    await context.route(`${ORIGIN}/**`, (route) => {
      const { pathname } = new URL(route.request().url());
      if (pathname === '/index.html') {
        return route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: PAGE });
      }
      if (pathname === '/signalr.js') {
        return route.fulfill({ status: 200, contentType: 'text/javascript; charset=utf-8', path: SIGNALR_JS });
      }
      if (pathname === '/signalr-protocol-msgpack.js') {
        return route.fulfill({ status: 200, contentType: 'text/javascript; charset=utf-8', path: MSGPACK_JS });
      }
      return route.fulfill({ status: 404, contentType: 'text/plain', body: 'not found' });
    });
    const page = await context.newPage();
    const logs = [];
    page.on('pageerror', (e) => logs.push(`page error: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') logs.push(`console ${m.type()}: ${m.text()}`); });
    const hub = `${base}/hubs/market`;
    const sockets = [];
    const hubRequests = [];
    page.on('websocket', (ws) => sockets.push(ws.url()));
    page.on('request', (r) => { if (r.url().startsWith(hub)) hubRequests.push({ method: r.method(), url: r.url(), accept: r.headers().accept ?? '' }); });

    const q = new URLSearchParams({ server: base });
    if (transport) q.set('transport', transport);
    if (protocol) q.set('protocol', protocol);
    await page.goto(`${ORIGIN}/index.html?${q}`);

    const statusText = () => page.locator('#status').textContent().catch(() => null);
    try {
      await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'connected', null, { timeout: 15_000 });
    } catch {
      assert.fail(`status did not become "connected" (it says ${JSON.stringify(await statusText())}); ` +
        `hub requests ${JSON.stringify(hubRequests)}; ${logs.join(' | ')}`);
    }
    for (const sym of ['AAPL', 'MSFT']) {
      try {
        await page.waitForFunction((s) => /^\d+\.\d{2}$/.test(document.querySelector(s)?.textContent ?? ''), priceSel(sym), { timeout: 10_000 });
      } catch {
        assert.fail(`${sym} row shows no price (status ${JSON.stringify(await statusText())}; ${logs.join(' | ')})`);
      }
    }
    const seq0 = Number(await page.textContent(seqSel('AAPL')));
    assert.ok(Number.isInteger(seq0), `AAPL seq cell: ${seq0}`);
    await page.waitForTimeout(2_000);
    const seq1 = Number(await page.textContent(seqSel('AAPL')));
    assert.ok(seq1 > seq0, `AAPL seq did not increase over 2 s (${seq0} -> ${seq1})`);
    assert.equal(await statusText(), 'connected');
    await page.screenshot({ path: path.join(RESULTS, screenshot) });

    const hubSockets = sockets.filter((u) => u.startsWith(hub.replace(/^http/, 'ws')));
    if (transport === 'LongPolling') {
      assert.deepEqual(hubSockets, [], 'a WebSocket was opened although long polling was forced');
      assert.ok(!hubRequests.some((r) => r.accept.includes('text/event-stream')), 'an EventSource was opened although long polling was forced');
      const polls = hubRequests.filter((r) => r.method === 'GET' && /[?&]id=/.test(r.url));
      assert.ok(polls.length >= 2, `expected repeated long polls, saw ${JSON.stringify(hubRequests)}`);
    } else if (transport === 'ServerSentEvents') {
      assert.deepEqual(hubSockets, [], 'a WebSocket was opened although Server-Sent Events were forced');
      const streams = hubRequests.filter((r) => r.method === 'GET' && r.accept.includes('text/event-stream'));
      assert.equal(streams.length, 1, `expected one EventSource, saw ${JSON.stringify(hubRequests)}`);
    } else {
      assert.ok(hubSockets.length === 1, `expected one WebSocket to ${hub}, saw ${JSON.stringify(sockets)}`);
    }

    // Leave cleanly.
    await page.evaluate(() => window.hub.stop());
    await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'closed', null, { timeout: 5_000 });
    assert.deepEqual(logs.filter((l) => l.startsWith('page error')), [], 'page errors');
    await context.close();
  } finally {
    await browser.close();
  }
}

test('SignalR browser client, cross-origin from http://app.test: live AAPL and MSFT rows', { timeout: 60_000 }, () =>
  runPage({ screenshot: 'signalr-browser.png' }));

test('SignalR browser client forced to long polling: live AAPL and MSFT rows', { timeout: 60_000 }, () =>
  runPage({ transport: 'LongPolling', screenshot: 'signalr-browser-longpolling.png' }));

test('SignalR browser client forced to Server-Sent Events: live AAPL and MSFT rows', { timeout: 60_000 }, () =>
  runPage({ transport: 'ServerSentEvents', screenshot: 'signalr-browser-sse.png' }));

test('SignalR browser client with the MessagePack protocol: live AAPL and MSFT rows', { timeout: 60_000 }, () =>
  runPage({ protocol: 'messagepack', screenshot: 'signalr-browser-msgpack.png' }));
