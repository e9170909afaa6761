// WebSocket connection to the Marquee gateway: reconnect with jittered
// exponential backoff, per-topic resume (`since`), heartbeat pings.

const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 5000;
const PING_EVERY_MS = 10000;
const SILENCE_LIMIT_MS = 30000; // nothing received for this long: assume the socket is dead

// `/ws` on the same host (relative to the page, so a path prefix also works).
export function wsUrl(loc = window.location) {
  const u = new URL('./ws', loc.href);
  u.protocol = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  u.hash = '';
  u.search = '';
  return u.href;
}

// Wall-clock ms with sub-ms resolution. performance.timeOrigin + now() is
// precise but can drift from the system clock (sleep, NTP steps), so it is
// re-anchored to Date.now() whenever the two disagree by more than 20 ms.
let clockFix = 0;
let clockCheckedAt = -Infinity;
export function nowMs() {
  const mono = performance.now();
  if (mono - clockCheckedAt > 1000) {
    clockCheckedAt = mono;
    const drift = Date.now() - (performance.timeOrigin + mono + clockFix);
    if (Math.abs(drift) > 20) clockFix += drift;
  }
  return performance.timeOrigin + mono + clockFix;
}

/**
 * Events passed to `onEvent(ev, recvMs)` are every element of every batch,
 * in order: ticks, snapshots, gaps and named events (`lot_update`,
 * `bid_result`, ...). `onStatus(status)` gets 'connecting' | 'live' |
 * 'reconnecting'. `onError(ev, request)` gets server error events, with the
 * request that caused them when the error carries a known `id`; `onAck(ev,
 * request)` gets acks (a `bid` ack carries its `bid_id`).
 */
export class Connection {
  constructor({ url = wsUrl(), onEvent, onStatus, onError, onAck } = {}) {
    this.url = url;
    this.onEvent = onEvent || (() => {});
    this.onStatus = onStatus || (() => {});
    this.onError = onError || (() => {});
    this.onAck = onAck || (() => {});
    this.stopped = false;
    this.topics = new Set();     // what we want to be subscribed to
    this.lastSeen = new Map();   // topic -> {epoch, seq}
    this.pending = new Map();    // request id -> request object (until ack/error)
    this.nextId = 1;
    this.ws = null;
    this.attempt = 0;
    this.everOpen = false;
    this.status = null;
    this.retryTimer = 0;
    this.pingTimer = 0;
    this.lastRecv = 0;
    this.gaps = 0;
  }

  start() {
    this.setStatus('connecting');
    this.open();
  }

  /** Closes the socket for good (no reconnect). */
  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws) try { ws.close(); } catch { /* ignore */ }
  }

  setStatus(s) {
    if (s === this.status) return;
    this.status = s;
    this.onStatus(s);
  }

  open() {
    clearTimeout(this.retryTimer);
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.attempt = 0;
      this.everOpen = true;
      this.lastRecv = Date.now();
      this.pending.clear();
      this.setStatus('live');
      if (this.topics.size) this.sendSubscribe([...this.topics], true);
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this.heartbeat(), PING_EVERY_MS);
    };
    ws.onmessage = (msg) => {
      if (ws !== this.ws) return;
      const recvMs = nowMs();
      this.lastRecv = Date.now();
      if (typeof msg.data !== 'string') return;
      let batch;
      try {
        batch = JSON.parse(msg.data);
      } catch {
        return;
      }
      if (!Array.isArray(batch)) batch = [batch];
      for (const ev of batch) this.handle(ev, recvMs);
    };
    ws.onclose = () => {
      if (ws !== this.ws) return;
      this.ws = null;
      clearInterval(this.pingTimer);
      this.scheduleReconnect();
    };
    // onerror is always followed by onclose; nothing to do here.
    ws.onerror = () => {};
  }

  scheduleReconnect() {
    if (this.stopped) return;
    this.setStatus(this.everOpen ? 'reconnecting' : 'connecting');
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 16);
    // "Equal jitter": between half and the full backoff.
    const delay = base / 2 + Math.random() * (base / 2);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  heartbeat() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    if (Date.now() - this.lastRecv > SILENCE_LIMIT_MS) {
      // Half-open connection: drop it and go through the reconnect path.
      const ws = this.ws;
      this.ws = null;
      clearInterval(this.pingTimer);
      try { ws.close(); } catch { /* ignore */ }
      this.scheduleReconnect();
      return;
    }
    this.send({ op: 'ping' });
  }

  handle(ev, recvMs) {
    if (!ev || typeof ev !== 'object') return;
    switch (ev.type) {
      case 'gap':
        this.gaps++;
        this.onEvent(ev, recvMs);
        return;
      case 'ack':
      case 'pong': {
        const req = this.pending.get(ev.id);
        this.pending.delete(ev.id);
        if (ev.type === 'ack') this.onAck(ev, req);
        return;
      }
      case 'error': {
        const req = this.pending.get(ev.id);
        this.pending.delete(ev.id);
        this.onError(ev, req);
        return;
      }
      default: {
        // A tick, a snapshot or a named event: every one carries topic, epoch and seq.
        if (typeof ev.topic !== 'string') return;
        if (!this.topics.has(ev.topic)) return; // in flight after an unsubscribe
        const last = this.lastSeen.get(ev.topic);
        const fresh = ev.type === 'snapshot' && ev.recovered === false;
        if (!fresh && last && last.epoch === ev.epoch && ev.seq <= last.seq) {
          // Duplicate or older than what we already have (e.g. replayed after a
          // snapshot): it would move the display backwards, so skip it.
          return;
        }
        if (Number.isFinite(ev.seq)) this.lastSeen.set(ev.topic, { epoch: ev.epoch, seq: ev.seq });
        this.onEvent(ev, recvMs);
        return;
      }
    }
  }

  send(obj) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return null; // sent on (re)open
    const id = this.nextId++;
    const msg = { ...obj, id };
    this.pending.set(id, msg);
    if (this.pending.size > 1000) this.pending.delete(this.pending.keys().next().value);
    this.ws.send(JSON.stringify(msg));
    return id;
  }

  sendSubscribe(topics, resume) {
    const msg = { op: 'subscribe', topics };
    if (resume) {
      const since = {};
      for (const t of topics) {
        const s = this.lastSeen.get(t);
        if (s) since[t] = { epoch: s.epoch, seq: s.seq };
      }
      if (Object.keys(since).length) msg.since = since;
    }
    return this.send(msg);
  }

  subscribe(topics) {
    const add = topics.filter((t) => !this.topics.has(t));
    if (!add.length) return null;
    for (const t of add) this.topics.add(t);
    return this.sendSubscribe(add, false);
  }

  /** Re-send a subscribe (with resume points) for topics still wanted. */
  resubscribe(topics) {
    const want = topics.filter((t) => this.topics.has(t));
    return want.length ? this.sendSubscribe(want, true) : null;
  }

  /** Drop topics locally without telling the server (it rejected them). */
  forget(topics) {
    for (const t of topics) {
      this.topics.delete(t);
      this.lastSeen.delete(t);
    }
  }

  unsubscribe(topics) {
    const del = topics.filter((t) => this.topics.has(t));
    if (!del.length) return null;
    for (const t of del) {
      this.topics.delete(t);
      this.lastSeen.delete(t);
    }
    return this.send({ op: 'unsubscribe', topics: del });
  }
}
