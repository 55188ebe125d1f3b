// The page's one WebSocket to /api/v1/ws (docs/protocol.md).
//
// - On connect it subscribes to what the page wants. The first time it gets
//   snapshots; after a drop it resumes with `since` = the highest seq it has
//   seen, so the server replays exactly the missed events (or, if it cannot,
//   sends `reset: true` snapshots, which the store applies as a reload).
// - It reconnects with capped exponential backoff and jitter: attempt n
//   waits between half and all of min(cap, base * 2^n), so a crowd of pages
//   dropped by one restart does not come back in lockstep.
// - The state it reports is what the badge shows: `connecting` (first
//   time), `live` (in sync: the snapshot or the resume has arrived),
//   `reconnecting`, and `offline` (the browser says so, or several attempts
//   in a row failed; it keeps retrying at the cap).
// - A socket can die without a close (sleep, a dropped NAT entry). The
//   server answers our pings, so a socket silent for SILENT_LIMIT_MS is
//   abandoned and replaced.
// - On a server with credentials the socket's first message is
//   `{"type":"auth","token"}` (browsers cannot set headers on a WebSocket).
//   A close with 4401 (token refused) or 4419 (token expired) asks for a
//   token (auth.js) and reconnects at once when one is given.

import { onToken, requireToken, token } from "./auth.js";

export const BACKOFF = { baseMs: 500, capMs: 15000, offlineAfter: 4 };
const PING_EVERY_MS = 15000;
const SILENT_LIMIT_MS = 40000;
/** Close code the server uses for a client that fell too far behind: resume at once. */
const CLOSE_LAGGING = 4008;
/** Close codes for a token the server refused, or one that expired: ask for another. */
const CLOSE_UNAUTHENTICATED = 4401;
const CLOSE_TOKEN_EXPIRED = 4419;

export class LiveSocket {
  /**
   * @param {object} options
   * @param {string} options.url the ws:// or wss:// URL
   * @param {(message: object) => void} options.onMessage every parsed server message, in order
   * @param {(state: string, info: object) => void} options.onState badge updates
   */
  constructor({ url, onMessage, onState, backoff = BACKOFF }) {
    this.url = url;
    this.onMessage = onMessage;
    this.onState = onState;
    this.backoff = backoff;
    /** Highest seq seen in any snapshot, event or resume; null before the first snapshot. */
    this.lastSeq = null;
    /** Topics the page wants, besides `system` (which is a reading, not history). */
    this.topics = new Set(["operations"]);
    /** Topics whose state we hold (their snapshot arrived): these can be resumed. */
    this.known = new Set();
    /** The server history our seqs belong to (from `hello`); seqs of another mean nothing. */
    this.history = null;
    /** Set when the history changed: the next snapshots start the state over. */
    this.forceReset = false;
    this.ws = null;
    this.greeted = false;
    this.attempt = 0;
    this.timer = null;
    this.state = null;
    this.retryAt = null;
    this.lastHeard = 0;
  }

  start() {
    this.setState("connecting");
    // A new token: start over on a socket that presents it.
    onToken(() => this.restart());
    this.connect();
    setInterval(() => this.heartbeat(), PING_EVERY_MS);
    window.addEventListener("online", () => this.retryNow());
    window.addEventListener("offline", () => {
      if (this.state !== "live") this.setState("offline");
    });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && !this.ws) this.retryNow();
    });
  }

  /** Adds a topic (e.g. `op:<id>`): its snapshot comes now if connected, else on reconnect. */
  want(topic) {
    if (this.topics.has(topic)) return;
    this.topics.add(topic);
    if (this.greeted) this.send({ type: "subscribe", topics: [topic] });
  }

  /** Drops a topic. */
  unwant(topic) {
    if (!this.topics.delete(topic)) return;
    this.known.delete(topic);
    if (this.greeted) this.send({ type: "unsubscribe", topics: [topic] });
  }

  /** Drops the current socket, if any, and connects again at once. */
  restart() {
    const ws = this.ws;
    if (ws) {
      ws.onmessage = ws.onclose = null;
      ws.close();
      this.ws = null;
      this.greeted = false;
    }
    this.attempt = 0;
    clearTimeout(this.timer);
    this.connect();
  }

  /** Reconnects now instead of waiting for the backoff timer. */
  retryNow() {
    if (this.ws) return;
    clearTimeout(this.timer);
    this.connect();
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    this.greeted = false;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.lastHeard = Date.now();
    ws.sentToken = null;
    ws.onopen = () => {
      ws.sentToken = token();
      if (ws.sentToken) ws.send(JSON.stringify({ type: "auth", token: ws.sentToken }));
    };
    ws.onmessage = (e) => this.receive(ws, e.data);
    ws.onclose = (e) => this.dropped(ws, e.code, e.reason);
    // An error is always followed by a close; the close decides what to do.
    ws.onerror = () => {};
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  /** A frame holds one message per line: the page connects with `?batch=true`. */
  receive(ws, data) {
    if (ws !== this.ws) return;
    this.lastHeard = Date.now();
    for (const line of String(data).split("\n")) {
      let message;
      try {
        message = JSON.parse(line);
      } catch {
        continue;
      }
      this.handle(message);
    }
  }

  handle(message) {
    switch (message.type) {
      case "hello":
        this.greeted = true;
        if (this.history !== null && message.history !== this.history) {
          // Another data file: our seq is not its seq. Start over from fresh snapshots.
          this.lastSeq = null;
          this.known.clear();
          this.forceReset = true;
        }
        this.history = message.history;
        this.subscribeAll();
        break;
      case "snapshot":
        // `system` is subscribed last: every topic before it starts over.
        if (this.forceReset) {
          if (message.topic === "system") this.forceReset = false;
          else message.reset = true;
        }
        this.noteSeq(message.seq);
        if (message.topic !== "system") this.known.add(message.topic);
        if (message.topic === "operations") this.setLive();
        break;
      case "resumed":
        this.noteSeq(message.seq);
        this.setLive();
        break;
      case "event":
        // system.status has no seq: it is a reading, not history.
        if (typeof message.seq === "number") this.noteSeq(message.seq);
        break;
      case "error":
        console.warn("opal: the server refused a message:", message.code, message.message);
        break;
      default:
        break;
    }
    this.onMessage(message);
  }

  /**
   * On each (re)connect: resume each topic we hold from the same `since`,
   * snapshot the ones we don't, and read `system` afresh. One message per
   * topic, so a topic the server refuses (a stale `op:` id) cannot take the
   * others down with it. Resuming them one by one is still exact: the
   * server replays to a new topic only events no earlier topic delivered.
   */
  subscribeAll() {
    for (const topic of this.topics) {
      const resume = this.lastSeq !== null && this.known.has(topic);
      this.send(resume ? { type: "subscribe", topics: [topic], since: this.lastSeq } : { type: "subscribe", topics: [topic] });
    }
    this.send({ type: "subscribe", topics: ["system"] });
  }

  noteSeq(seq) {
    if (typeof seq === "number" && (this.lastSeq === null || seq > this.lastSeq)) this.lastSeq = seq;
  }

  setLive() {
    this.attempt = 0;
    this.retryAt = null;
    this.setState("live");
  }

  dropped(ws, code, reason) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.greeted = false;
    if (code === CLOSE_UNAUTHENTICATED || code === CLOSE_TOKEN_EXPIRED) {
      // Reconnects through onToken once a token is given.
      this.setState("reconnecting");
      requireToken(reason, ws.sentToken);
      return;
    }
    if (code === CLOSE_LAGGING) this.attempt = 0;
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    clearTimeout(this.timer);
    const { baseMs, capMs, offlineAfter } = this.backoff;
    const ceiling = Math.min(capMs, baseMs * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    const offline = navigator.onLine === false || this.attempt > offlineAfter;
    this.setState(offline ? "offline" : "reconnecting");
    this.timer = setTimeout(() => this.connect(), delay);
  }

  heartbeat() {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (Date.now() - this.lastHeard > SILENT_LIMIT_MS) {
      // Dead without a close: stop listening to it and start over.
      ws.onmessage = ws.onclose = null;
      ws.close();
      this.dropped(ws, 0);
      return;
    }
    this.send({ type: "ping" });
  }

  setState(state) {
    if (state === this.state && state !== "offline" && state !== "reconnecting") return;
    this.state = state;
    this.onState(state, { retryAt: this.retryAt, attempt: this.attempt });
  }
}
