// Marquee auction house: live lots with countdowns, log in by name, bid, and
// see every outcome arrive by push (bid_result, outbid, lot_update,
// lot_closed, won). The page never polls: it reads /api/lots once at start
// and again only when a lot closes (to pick up its replacement).
import { showToast } from './toast.js';
import { Connection, wsUrl } from './conn.js';

const TOKEN_KEY = 'marquee.auction.token';
const NAME_KEY = 'marquee.auction.name';
const $ = (sel) => document.querySelector(sel);
const els = {
  lots: $('#lots'),
  status: $('#conn-status'),
  form: $('#login-form'),
  name: $('#login-name'),
  whoami: $('#whoami'),
  hint: $('#login-hint'),
  banner: $('#banner'),
  toasts: $('#toasts'),
  count: $('#lot-count'),
};

let token = sessionStorage.getItem(TOKEN_KEY);
let me = sessionStorage.getItem(NAME_KEY);
let conn = null;
const lots = new Map();      // lot id -> view (as GET /api/lots returns it)
const cards = new Map();     // lot id -> card element
const myBids = new Map();    // idempotency key -> { lot, amount, status, reason }

// ---------- helpers ----------
function toast(msg, kind = 'info', ms = 6000) {
  showToast(els.toasts, msg, kind, ms);
}

function countdown(lot) {
  if (lot.state === 'sold' || lot.state === 'unsold') return lot.state === 'sold' ? 'sold' : 'ended';
  const target = lot.state === 'scheduled' ? lot.starts_at : lot.ends_at;
  const s = Math.max(0, Math.ceil((target - Date.now()) / 1000));
  const text = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
  return lot.state === 'scheduled' ? `opens in ${text}` : text;
}

function field(card, name) {
  return card.querySelector(`[data-field="${name}"]`);
}

// ---------- rendering ----------
function cardFor(id) {
  let card = cards.get(id);
  if (card) return card;
  card = document.createElement('article');
  card.className = 'lot';
  card.dataset.lot = id;
  card.innerHTML = `
    <div class="lot-head"><span class="emoji" data-field="emoji"></span>
      <div><h2 data-field="title"></h2><span class="lot-id">lot ${id}</span></div>
      <span class="badge" data-field="state"></span></div>
    <dl class="lot-facts">
      <div><dt>High bid</dt><dd data-field="high">–</dd></div>
      <div><dt>Leader</dt><dd data-field="leader">–</dd></div>
      <div><dt>Bids</dt><dd data-field="bids">0</dd></div>
      <div><dt>Ends in</dt><dd data-field="countdown">–</dd></div>
    </dl>
    <form class="bid-form" autocomplete="off">
      <input data-field="amount" type="text" inputmode="decimal" aria-label="Bid amount for lot ${id}">
      <button class="btn" data-action="bid" type="submit">Bid</button>
    </form>
    <div class="my-bid" data-field="my-bid" aria-live="polite"></div>`;
  card.querySelector('form').addEventListener('submit', (e) => {
    e.preventDefault();
    placeBid(id, field(card, 'amount').value.trim());
  });
  cards.set(id, card);
  els.lots.appendChild(card);
  return card;
}

function render(id) {
  const lot = lots.get(id);
  if (!lot) return;
  const card = cardFor(id);
  field(card, 'emoji').textContent = lot.emoji;
  field(card, 'title').textContent = lot.title;
  const st = field(card, 'state');
  st.textContent = lot.state;
  st.className = `badge state-${lot.state}`;
  field(card, 'high').textContent = lot.high_bid ?? '–';
  field(card, 'leader').textContent = lot.leader ? (lot.leader === me ? `${lot.leader} (you)` : lot.leader) : '–';
  field(card, 'bids').textContent = String(lot.bids);
  field(card, 'countdown').textContent = countdown(lot);
  const amount = field(card, 'amount');
  if (document.activeElement !== amount) amount.value = lot.min_bid;
  const open = lot.state === 'open';
  card.classList.toggle('closed', !open);
  card.querySelector('[data-action="bid"]').disabled = !open || !token;
  els.count.textContent = `${[...lots.values()].filter((l) => l.state === 'open').length} open lots`;
}

function showMyBid(lotId, bid) {
  const el = field(cardFor(lotId), 'my-bid');
  el.dataset.status = bid.status;
  el.textContent = bid.status === 'rejected'
    ? `Your bid of ${bid.amount}: rejected (${bid.reason})`
    : `Your bid of ${bid.amount}: ${bid.status}`;
}

// ---------- data ----------
async function loadLots() {
  const res = await fetch('./api/lots');
  if (!res.ok) throw new Error(`GET /api/lots: HTTP ${res.status}`);
  const list = await res.json();
  for (const lot of list) {
    lots.set(lot.lot, lot);
    render(lot.lot);
  }
  conn?.subscribe(list.map((l) => `lots.${l.lot}`));
}

function onEvent(ev) {
  const type = ev.type === 'snapshot' ? ev.event : ev.type;
  switch (type) {
    case 'lot_update': {
      lots.set(ev.lot, { ...lots.get(ev.lot), ...ev });
      render(ev.lot);
      break;
    }
    case 'lot_closed': {
      const lot = lots.get(ev.lot);
      if (lot) {
        lots.set(ev.lot, { ...lot, state: ev.state, winner: ev.winner, price: ev.price });
        render(ev.lot);
      }
      if (ev.type !== 'snapshot') loadLots().catch(() => {});
      break;
    }
    case 'bid_result': {
      const bid = myBids.get(ev.key) ?? { lot: ev.lot, amount: ev.amount };
      Object.assign(bid, { amount: ev.amount, status: ev.status, reason: ev.reason });
      myBids.set(ev.key, bid);
      showMyBid(ev.lot, bid);
      break;
    }
    case 'outbid': {
      if (ev.type === 'snapshot') break; // old news on reconnect
      toast(`Outbid on ${ev.title}: ${ev.leader} bid ${ev.high_bid}`, 'outbid');
      break;
    }
    case 'won': {
      els.banner.hidden = false;
      els.banner.textContent = `🎉 You won ${ev.title} for ${ev.price}!`;
      break;
    }
    default:
      break;
  }
}

async function placeBid(lotId, amount) {
  if (!token) return toast('Log in to bid', 'error');
  const key = crypto.randomUUID();
  const bid = { lot: lotId, amount, status: 'pending' };
  myBids.set(key, bid);
  showMyBid(lotId, bid);
  let res;
  try {
    res = await fetch(`./api/lots/${encodeURIComponent(lotId)}/bids`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}`, 'Idempotency-Key': key },
      body: JSON.stringify({ amount }),
    });
  } catch (e) {
    Object.assign(bid, { status: 'rejected', reason: 'network error' });
    return showMyBid(lotId, bid);
  }
  if (res.status === 202) return; // the outcome comes by push
  const body = await res.json().catch(() => ({}));
  Object.assign(bid, { status: 'rejected', reason: body?.error?.code ?? `HTTP ${res.status}` });
  showMyBid(lotId, bid);
}

// ---------- connection and login ----------
function connect() {
  conn?.stop();
  let url = wsUrl();
  if (token) url += `?access_token=${encodeURIComponent(token)}`;
  conn = new Connection({
    url,
    onEvent,
    onStatus: (s) => {
      els.status.textContent = s;
      els.status.className = `badge ${s}`;
    },
    onError: (ev) => toast(`${ev.code}: ${ev.message}`, 'error'),
  });
  conn.start();
  const topics = [...lots.keys()].map((id) => `lots.${id}`);
  if (me) topics.push(`users.${me}`);
  if (topics.length) conn.subscribe(topics);
}

function showIdentity() {
  els.whoami.hidden = !me;
  els.whoami.textContent = me ? `Bidding as ${me}` : '';
  els.form.hidden = Boolean(me);
  els.hint.hidden = Boolean(me);
  for (const id of lots.keys()) render(id);
}

els.form.addEventListener('submit', async (e) => {
  e.preventDefault();
  const name = els.name.value.trim();
  const res = await fetch('./api/login', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) return toast(`${body?.error?.code ?? 'error'}: ${body?.error?.message ?? res.status}`, 'error');
  token = body.token;
  me = body.name;
  sessionStorage.setItem(TOKEN_KEY, token);
  sessionStorage.setItem(NAME_KEY, me);
  showIdentity();
  connect();
});

setInterval(() => {
  for (const [id, lot] of lots) {
    const card = cards.get(id);
    if (card) field(card, 'countdown').textContent = countdown(lot);
  }
}, 250);

showIdentity();
connect();
loadLots().catch((e) => toast(String(e), 'error'));
