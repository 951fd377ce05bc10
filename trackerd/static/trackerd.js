// trackerd.js: the browser client for trackerd, an ES module with no dependencies.
//
//   import { TrackerClient } from "http://localhost:5000/trackerd.js";
//   const tracker = new TrackerClient({ token: "…" });  // the server the module came from
//   tracker.on("eye_data", (data) => console.log(data.looking_away, data.confidence));
//   tracker.on("problem", (p) => console.warn(p.kind, p.message));
//   await tracker.startCamera({ video: document.querySelector("video") });  // or startServer()
//
// Push mode ("my camera"): the page's camera is read with getUserMedia, drawn on a canvas no
// wider than maxWidth, encoded as JPEG and sent as one binary message. At most one frame is in
// flight: the next is sent when the previous one's eye_data (or an error) arrives, or after
// frameTimeoutMs, and never faster than the server's max_fps. So the frame rate follows what
// the server and the network can take, and no queue builds up anywhere.
//
// Reconnects: after a close with 1001 (server going away), 1006 (connection lost), 1011, 1012
// or 1013, it reconnects after a backoff (0.5 s doubling to 10 s, with jitter) and resumes what
// it was doing; so it does after a 1008 whose reason is "session_idle" (the server closes a push
// session that sent no frame for 15 s: a tab in the background, whose timers the browser
// throttles to one a minute, sends next to none). A handshake that fails is diagnosed through GET /access (a browser hides the
// HTTP status of a refused WebSocket): 401 and 403 are reported and not retried, 503 is.
//
// Events (tracker.on(type, fn); fn(detail, tracker)): every server message as "message" and
// under its own type ("connection", "eye_data", "tracking_started", "status", "pong", "error");
// "open"; "close" {code, reason, reconnectInMs}; "frame" {frame, bytes, width, height} for each
// frame sent; "problem" {kind, message, status?} with kind one of camera-denied,
// camera-unavailable, grab-failed (one frame could not be grabbed; the next is tried in
// 0.5 s), unauthorized, forbidden, busy, unreachable, connection-lost, closed, server-error. A
// refused push session (busy, not granted…) closes the camera it opened.

export const RECONNECT_CODES = new Set([1001, 1006, 1011, 1012, 1013]);
/** How long after a failed grab the next is tried: a hiccup passes, a broken camera is not
 * hammered. */
const GRAB_RETRY_MS = 500;

/** A push session refused for want of room (codes, not the text, which is for people). */
const BUSY = new Set(["server_busy", "address_busy", "address_penalised", "store_unavailable"]);

/** Frames the server did not analyse for its own reasons: the next frame simply goes. */
const NOT_ANALYSED = new Set(["frame_over_rate", "frame_replaced"]);

/** Close reasons that a reconnect mends, whatever the code. */
export const RECONNECT_REASONS = new Set(["session_idle"]);

const DEFAULTS = {
  frameTimeoutMs: 1000,
  backoffInitialMs: 500,
  backoffMaxMs: 10000,
  maxWidth: 640,
  quality: 0.8,
};

/** The WebSocket URL of the server this module was loaded from (or the page's own). */
export function defaultUrl(moduleUrl = import.meta.url) {
  const base = new URL(moduleUrl, globalThis.location?.href);
  const scheme = base.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${base.host}/`;
}

export class TrackerClient {
  constructor(options = {}) {
    this.options = { ...DEFAULTS, ...options };
    this.url = new URL(options.url ?? defaultUrl());
    if (options.token) this.url.searchParams.set("token", options.token);
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    this.timers = options.timers ?? {
      setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
      clearTimeout: (id) => globalThis.clearTimeout(id),
      now: () => performance.now(),
    };
    this.random = options.random ?? Math.random;
    this.handlers = new Map();
    this.ws = null;
    this.wanted = null; // null, "server" or "client": what to resume after a reconnect
    this.closed = false; // close() was called: no more reconnects
    this.attempt = 0; // failed connections in a row, for the backoff
    this.reconnectTimer = null;
    this.grab = null; // async () => {data, width, height} | null, in push mode
    this.session = null; // the tracking_started of the current push session
    this.inFlight = null; // {frame, at, timer}: the one frame awaiting its answer
    this.pumpTimer = null;
    this.grabbing = false;
    this.lastSentAt = -Infinity;
    this.cameraStream = null;
    this.stats = { sent: 0, answered: 0, timedOut: 0, latencyMs: null, fps: 0, frame: null };
    this.arrivals = []; // eye_data arrival times over the last 2 s, for fps
  }

  /** Call fn(detail, tracker) on each event of this type; returns a function that stops it. */
  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(fn);
    return () => this.handlers.get(type).delete(fn);
  }

  emit(type, detail) {
    for (const fn of this.handlers.get(type) ?? []) fn(detail, this);
  }

  get connected() {
    return this.ws !== null && this.ws.readyState === 1;
  }

  /** Open the connection (startServer and startCamera do it when needed). */
  connect() {
    this.closed = false;
    if (this.ws !== null || this.reconnectTimer !== null) return;
    const ws = new this.WebSocket(this.url.href);
    ws.binaryType = "arraybuffer";
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.emit("open", { url: this.url.href });
      this.resume();
    };
    ws.onmessage = (event) => this.receive(event.data);
    ws.onclose = (event) => this.lost(ws, event, opened);
    this.ws = ws;
  }

  /** Track with the server's own capture (its camera, file or demo clip). */
  startServer() {
    if (this.wanted === "client" && this.connected) this.send({ type: "stop_tracking" });
    this.stopPushing();
    this.wanted = "server";
    this.connect();
    if (this.connected) this.send({ type: "start_tracking" });
  }

  /**
   * Track the page's own camera (push mode). Options: video (an element to show the camera in;
   * one is made if absent), stream (a MediaStream to use instead of asking for the camera),
   * maxWidth, quality, constraints (for getUserMedia). Resolves to true once the camera runs,
   * false if it could not be opened (a "problem" event says why).
   */
  async startCamera(options = {}) {
    const opts = { ...this.options, ...options };
    const video = opts.video ?? document.createElement("video");
    let stream = opts.stream;
    if (!stream) {
      try {
        stream = await openCamera(opts.constraints);
      } catch (error) {
        this.emit("problem", cameraProblem(error));
        return false;
      }
      this.cameraStream = stream;
    }
    video.muted = true;
    video.playsInline = true;
    video.srcObject = stream;
    try {
      await video.play();
    } catch (error) {
      // The camera is open (its light is on) but shows nowhere: close it, and say why.
      this.stopPushing();
      this.emit("problem", cameraProblem(error));
      return false;
    }
    this.pushFrames(canvasGrabber(video, opts));
    return true;
  }

  /**
   * Push frames from any source: grab() resolves to {data, width, height} (data: a Blob or an
   * ArrayBuffer holding one JPEG, PNG or WebP image) or null when no frame is ready yet.
   */
  pushFrames(grab) {
    if (this.wanted === "server" && this.connected) this.send({ type: "stop_tracking" });
    this.grab = grab;
    this.wanted = "client";
    this.connect();
    if (this.connected) this.send({ type: "start_tracking", source: "client" });
  }

  /** Stop tracking (the connection stays open). */
  stop() {
    const was = this.wanted;
    this.stopPushing();
    this.wanted = null;
    if (was !== null && this.connected) this.send({ type: "stop_tracking" });
  }

  /** Stop tracking and close for good. */
  close() {
    this.stop();
    this.closed = true;
    if (this.reconnectTimer !== null) this.timers.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (this.ws !== null) this.ws.close(1000, "client closed");
  }

  send(message) {
    this.ws.send(JSON.stringify(message));
  }

  // --- what happens on the connection -------------------------------------------------------

  resume() {
    if (this.wanted === "server") this.send({ type: "start_tracking" });
    if (this.wanted === "client") this.send({ type: "start_tracking", source: "client" });
  }

  receive(raw) {
    let message;
    try {
      message = JSON.parse(raw);
    } catch {
      this.emit("problem", { kind: "server-error", message: "the server sent something not JSON" });
      return;
    }
    if (message.type === "connection") this.attempt = 0; // a full handshake: the backoff resets
    if (message.type === "tracking_started" && message.source === "client") {
      this.session = message;
      this.pump();
    }
    if (message.type === "eye_data") this.answered(message);
    if (message.type === "error") this.failed(message);
    this.emit("message", message);
    this.emit(message.type, message);
  }

  answered(message) {
    const now = this.timers.now();
    this.arrivals.push(now);
    while (this.arrivals[0] < now - 2000) this.arrivals.shift();
    const span = (now - this.arrivals[0]) / 1000;
    this.stats.fps = span > 0 ? (this.arrivals.length - 1) / span : 0;
    this.stats.frame = message.frame ?? null;
    if (this.wanted === "server" && typeof message.captured_at === "number") {
      // The server's clock against the page's: meaningful when both keep good time.
      this.stats.latencyMs = Math.max(0, Date.now() - message.captured_at * 1000);
    }
    if (this.inFlight !== null) {
      this.stats.answered += 1;
      this.stats.latencyMs = now - this.inFlight.at;
      this.release();
    }
  }

  failed(message) {
    if (NOT_ANALYSED.has(message.code)) {
      // The server's own reasons (its rate, or a newer frame): answered, but no problem.
      if (this.inFlight !== null) this.release();
      return;
    }
    if (this.inFlight !== null) {
      this.release(); // a frame the server could not use is answered by an error
    } else if (this.wanted === "client" && this.session === null) {
      // start_tracking with source "client" was refused (the server is at --max-sessions…):
      // nothing will be sent, so the camera is closed rather than left on for nobody.
      const busy = BUSY.has(message.code);
      this.stopPushing();
      this.wanted = null;
      this.emit("problem", { kind: busy ? "busy" : "server-error", message: message.message });
      return;
    }
    this.emit("problem", { kind: "server-error", message: message.message });
  }

  /** The frame in flight is answered (or given up on): send the next. */
  release() {
    this.timers.clearTimeout(this.inFlight.timer);
    this.inFlight = null;
    this.pump();
  }

  /** Send the next frame if none is in flight and the server's max_fps allows it now. */
  async pump() {
    const ws = this.ws;
    const ready = this.grab !== null && this.session !== null && this.connected;
    if (!ready || this.inFlight !== null || this.grabbing || this.pumpTimer !== null) return;
    const maxFps = this.session.max_fps || 0;
    const wait = maxFps > 0 ? this.lastSentAt + 1000 / maxFps - this.timers.now() : 0;
    if (wait > 0) return this.pumpLater(wait);
    this.grabbing = true;
    let frame;
    try {
      frame = await this.grab({ maxBytes: this.session.max_frame_bytes });
    } catch (error) {
      // One failed grab (a canvas or encoder hiccup) must not stop the pushing for good.
      this.emit("problem", { kind: "grab-failed", message: `${error?.message ?? error}` });
      return this.pumpLater(GRAB_RETRY_MS);
    } finally {
      this.grabbing = false;
    }
    if (ws !== this.ws || this.session === null || !this.connected) return; // stopped meanwhile
    if (frame === null) return this.pumpLater(30); // the camera has no picture yet
    const bytes = frame.data.byteLength ?? frame.data.size;
    const number = ++this.stats.sent;
    const timer = this.timers.setTimeout(() => {
      this.stats.timedOut += 1;
      this.release();
    }, this.options.frameTimeoutMs);
    this.inFlight = { frame: number, at: this.timers.now(), timer };
    this.lastSentAt = this.inFlight.at;
    ws.send(frame.data);
    this.emit("frame", { frame: number, bytes, width: frame.width, height: frame.height });
  }

  pumpLater(ms) {
    this.pumpTimer = this.timers.setTimeout(() => {
      this.pumpTimer = null;
      this.pump();
    }, ms);
  }

  stopPushing() {
    if (this.inFlight !== null) this.timers.clearTimeout(this.inFlight.timer);
    if (this.pumpTimer !== null) this.timers.clearTimeout(this.pumpTimer);
    this.inFlight = null;
    this.pumpTimer = null;
    this.session = null;
    this.grab = null;
    for (const track of this.cameraStream?.getTracks() ?? []) track.stop();
    this.cameraStream = null;
  }

  async lost(ws, event, opened) {
    if (ws !== this.ws) return;
    this.ws = null;
    if (this.inFlight !== null) this.timers.clearTimeout(this.inFlight.timer);
    this.inFlight = null;
    this.session = null; // a session ends with its connection; resume() asks for a new one
    const retry =
      !this.closed &&
      (RECONNECT_CODES.has(event.code) || RECONNECT_REASONS.has(event.reason));
    let problem = null;
    if (!retry) {
      if (!this.closed) problem = { kind: "closed", message: closedMessage(event) };
    } else if (!opened) {
      problem = await this.diagnose();
    } else {
      problem = { kind: "connection-lost", message: "connection lost: reconnecting" };
    }
    const again = retry && !["unauthorized", "forbidden"].includes(problem?.kind);
    const delay = again ? this.backoff() : null;
    this.emit("close", { code: event.code, reason: event.reason, reconnectInMs: delay });
    if (problem !== null) this.emit("problem", problem);
    if (again && !this.closed) {
      this.reconnectTimer = this.timers.setTimeout(() => {
        this.reconnectTimer = null;
        if (!this.closed) this.connect();
      }, delay);
    }
  }

  backoff() {
    const { backoffInitialMs, backoffMaxMs } = this.options;
    const full = Math.min(backoffMaxMs, backoffInitialMs * 2 ** this.attempt);
    this.attempt += 1;
    return Math.round(full * (0.5 + this.random() / 2)); // jitter: clients do not come back at once
  }

  /** Why a handshake failed, asked of GET /access with the same Origin and token. */
  async diagnose() {
    const lost = { kind: "unreachable", message: `cannot reach the server at ${this.url.host}` };
    if (!this.fetch) return lost;
    const probe = new URL(this.url.href);
    probe.protocol = probe.protocol === "wss:" ? "https:" : "http:";
    probe.pathname = "/access";
    let verdict;
    try {
      const response = await this.fetch(probe.href, { cache: "no-store" });
      verdict = await response.json();
    } catch {
      return lost;
    }
    const kinds = { 401: "unauthorized", 403: "forbidden", 503: "busy" };
    const kind = kinds[verdict.status] ?? "unreachable";
    const words = {
      unauthorized: "401: the token is missing or wrong",
      forbidden: "403: this page's origin is not allowed by the server (--allowed-origins)",
      busy: "503: the server is full; retrying",
      unreachable: "the connection failed; retrying",
    };
    return { kind, status: verdict.status, message: `${words[kind]} (${verdict.reason})` };
  }
}

async function openCamera(constraints) {
  if (!globalThis.navigator?.mediaDevices?.getUserMedia) {
    const error = new Error("no camera API here: the page must be served over https or localhost");
    error.name = "NotSupportedError";
    throw error;
  }
  const video = constraints ?? { width: { ideal: 640 }, height: { ideal: 480 } };
  return navigator.mediaDevices.getUserMedia({ video, audio: false });
}

function cameraProblem(error) {
  if (error?.name === "NotAllowedError" || error?.name === "SecurityError") {
    return { kind: "camera-denied", message: "camera permission denied: allow the camera and retry" };
  }
  return { kind: "camera-unavailable", message: `no camera: ${error?.message ?? error}` };
}

function closedMessage(event) {
  const why = { 1000: "closed", 1008: "policy violation", 1009: "message too big" };
  return `connection closed by the server (${event.code} ${why[event.code] ?? ""} ${event.reason ?? ""})`
    .replace(/\s+/g, " ")
    .replace(" )", ")");
}

/**
 * A grab() for pushFrames: the video's current picture, no wider than maxWidth, as a JPEG.
 * If the JPEG is over the server's max_frame_bytes, the quality is lowered until it fits.
 */
export function canvasGrabber(video, { maxWidth = 640, quality = 0.8 } = {}) {
  const canvas = document.createElement("canvas");
  const context = canvas.getContext("2d");
  return async ({ maxBytes } = {}) => {
    if (video.readyState < 2 || !video.videoWidth) return null;
    const scale = Math.min(1, maxWidth / video.videoWidth);
    const [width, height] = [Math.round(video.videoWidth * scale), Math.round(video.videoHeight * scale)];
    // Set only when the size changes: setting it reallocates the canvas, even to the same size.
    if (canvas.width !== width || canvas.height !== height) [canvas.width, canvas.height] = [width, height];
    context.drawImage(video, 0, 0, canvas.width, canvas.height);
    for (let q = quality; ; q -= 0.15) {
      const blob = await new Promise((done) => canvas.toBlob(done, "image/jpeg", q));
      if (blob === null) return null;
      if (!maxBytes || blob.size <= maxBytes || q <= 0.3) {
        return { data: blob, width: canvas.width, height: canvas.height };
      }
    }
  };
}
