// The client module's own logic under Node's test runner: the one-frame-in-flight rule and the
// reconnect with backoff. The WebSocket, fetch and timers are fakes injected into the client
// (it takes them as options), so these tests drive time and the "server" by hand. What the
// real server answers is tested in tests/test_browser*.py, in Chromium.
//
//   node --test tests/js/trackerd.test.mjs

import assert from "node:assert/strict";
import { test } from "node:test";

import { TrackerClient, canvasGrabber } from "../../trackerd/static/trackerd.js";

const flush = () => new Promise((resolve) => setImmediate(resolve));

/** setTimeout/clearTimeout/now on a clock that moves only when told. */
class Clock {
  constructor() {
    this.t = 0;
    this.tasks = [];
    this.ids = 0;
  }
  setTimeout(fn, ms) {
    const id = ++this.ids;
    this.tasks.push({ id, at: this.t + ms, fn });
    return id;
  }
  clearTimeout(id) {
    this.tasks = this.tasks.filter((task) => task.id !== id);
  }
  now() {
    return this.t;
  }
  async advance(ms) {
    const end = this.t + ms;
    await flush();
    for (;;) {
      this.tasks.sort((a, b) => a.at - b.at);
      if (this.tasks.length === 0 || this.tasks[0].at > end) break;
      const task = this.tasks.shift();
      this.t = task.at;
      task.fn();
      await flush();
    }
    this.t = end;
    await flush();
  }
}

class FakeSocket {
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.readyState = 0;
    FakeSocket.made.push(this);
  }
  open() {
    this.readyState = 1;
    this.onopen({});
    this.receive({ type: "connection", message: "Eye tracking connected" });
  }
  receive(message) {
    this.onmessage({ data: JSON.stringify(message) });
  }
  send(data) {
    this.sent.push(data);
  }
  close(code = 1000, reason = "") {
    this.drop(code, reason);
  }
  drop(code, reason = "") {
    this.readyState = 3;
    this.onclose({ code, reason });
  }
  get frames() {
    return this.sent.filter((d) => typeof d !== "string");
  }
  get commands() {
    return this.sent.filter((d) => typeof d === "string").map((d) => JSON.parse(d));
  }
}

function setup({ verdict = { status: 101, reason: "admitted" } } = {}) {
  FakeSocket.made = [];
  const clock = new Clock();
  const probes = [];
  const fetch = async (url) => {
    probes.push(url);
    return { json: async () => verdict };
  };
  const client = new TrackerClient({
    url: "ws://tracker.test:5000/",
    token: "t0k",
    WebSocket: FakeSocket,
    fetch,
    timers: clock,
    random: () => 1, // no jitter: the backoff is exactly initial * 2^n
  });
  const events = [];
  for (const type of ["problem", "close", "frame", "eye_data"]) {
    client.on(type, (detail) => events.push([type, detail]));
  }
  return { client, clock, probes, events, socket: () => FakeSocket.made.at(-1) };
}

const started = (maxFps = 0) => ({
  type: "tracking_started",
  source: "client",
  session: "s1",
  max_frame_bytes: 1000,
  max_fps: maxFps,
});
const grabber = () => {
  let n = 0;
  return async () => ({ data: new Uint8Array([++n, 0xff, 0xd8]).buffer, width: 64, height: 48 });
};
/** A client in push mode whose session has started. */
function pushing(maxFps = 0) {
  const made = setup();
  made.client.pushFrames(grabber());
  made.socket().open();
  made.socket().receive(started(maxFps));
  return made;
}
const eyeData = (frame) => ({ type: "eye_data", frame, face_detected: true });

test("the token goes on the URL, and push mode asks for a session", async () => {
  const { client, socket } = setup();
  client.pushFrames(grabber());
  assert.equal(socket().url, "ws://tracker.test:5000/?token=t0k");
  socket().open();
  assert.deepEqual(socket().commands, [{ type: "start_tracking", source: "client" }]);
  await flush();
  assert.equal(socket().frames.length, 0, "no frame before tracking_started");
});

test("one frame in flight: the next goes when the answer arrives", async () => {
  const { client, clock, socket } = pushing();
  await clock.advance(500);
  assert.equal(socket().frames.length, 1, "one frame, then nothing until it is answered");
  socket().receive(eyeData(1));
  await clock.advance(0);
  assert.equal(socket().frames.length, 2);
  assert.equal(new Uint8Array(socket().frames[1])[0], 2, "a new grab, not the old frame again");
  assert.equal(client.stats.answered, 1);
  assert.equal(client.stats.latencyMs, 500);
});

test("nothing else sends a second frame while one is in flight", async () => {
  const { client, clock, socket } = pushing();
  await clock.advance(10);
  socket().receive(started()); // a repeated start (or any other wake-up) while frame 1 waits
  socket().receive({ type: "pong" });
  await clock.advance(10);
  assert.equal(socket().frames.length, 1);
});

test("an unanswered frame is given up after the timeout, and the next one is sent", async () => {
  const { client, clock, socket } = pushing();
  await clock.advance(999);
  assert.equal(socket().frames.length, 1);
  await clock.advance(1);
  assert.equal(socket().frames.length, 2);
  assert.equal(client.stats.timedOut, 1);
  // A late answer to the given-up frame counts for the one now in flight: never two in flight.
  socket().receive(eyeData(1));
  await clock.advance(0);
  assert.equal(socket().frames.length, 3);
});

test("an error answers the frame in flight (a frame the server could not decode)", async () => {
  const { client, clock, socket, events } = pushing();
  await clock.advance(10);
  socket().receive({ type: "error", message: "frame 1 does not decode" });
  await clock.advance(0);
  assert.equal(socket().frames.length, 2);
  assert.ok(events.some(([t, d]) => t === "problem" && d.kind === "server-error"));
});

test("a frame the server did not analyse for its rate is answered, and is no problem", async () => {
  const { client, clock, socket, events } = pushing();
  await clock.advance(10);
  socket().receive({ type: "error", code: "frame_over_rate", message: "frame 1: over max_fps" });
  await clock.advance(0);
  assert.equal(socket().frames.length, 2);
  assert.ok(!events.some(([t]) => t === "problem"));
});

test("frames never go faster than the server's max_fps", async () => {
  const { client, clock, socket } = pushing(10);
  await clock.advance(0);
  socket().receive(eyeData(1)); // answered at once: the next must still wait 100 ms
  await clock.advance(99);
  assert.equal(socket().frames.length, 1);
  await clock.advance(1);
  assert.equal(socket().frames.length, 2);
});

test("a camera with no picture yet is asked again, without sending anything", async () => {
  const { client, clock, socket } = setup();
  let calls = 0;
  client.pushFrames(async () => (++calls < 3 ? null : { data: new ArrayBuffer(4) }));
  socket().open();
  socket().receive(started());
  await clock.advance(100);
  assert.equal(calls, 3);
  assert.equal(socket().frames.length, 1);
});

test("a refused push session is a problem, and nothing is sent", async () => {
  const { client, clock, socket, events } = setup();
  client.pushFrames(grabber());
  socket().open();
  socket().receive({ type: "error", code: "server_busy", message: "server busy: try later" });
  await clock.advance(2000);
  assert.equal(socket().frames.length, 0);
  assert.deepEqual(
    events.filter(([t]) => t === "problem").map(([, d]) => d.kind),
    ["busy"],
  );
});

test("a refused push session closes the camera", async () => {
  const { client, socket } = setup();
  const stopped = [];
  client.pushFrames(grabber());
  client.cameraStream = { getTracks: () => [{ stop: () => stopped.push("video") }] };
  socket().open();
  socket().receive({ type: "error", code: "server_busy", message: "server busy" });
  assert.deepEqual(stopped, ["video"]);
  assert.equal(client.cameraStream, null);
});

test("a grab that fails is a problem, and the pushing goes on", async () => {
  const { client, clock, socket, events } = setup();
  let calls = 0;
  const good = grabber();
  client.pushFrames(async (options) => {
    calls += 1;
    if (calls === 1) throw new Error("the encoder hiccuped");
    return good(options);
  });
  socket().open();
  socket().receive(started());
  await clock.advance(0);
  assert.equal(socket().frames.length, 0);
  assert.ok(events.some(([t, d]) => t === "problem" && d.kind === "grab-failed"));
  await clock.advance(500);
  assert.equal(socket().frames.length, 1);
});

test("a refusal is told by its code, not by words in its text", async () => {
  const { client, clock, socket, events } = setup();
  client.pushFrames(grabber());
  socket().open();
  socket().receive({ type: "error", code: "not_granted", message: "max session busy full" });
  await clock.advance(0);
  assert.deepEqual(
    events.filter(([t]) => t === "problem").map(([, d]) => d.kind),
    ["server-error"],
  );
});

test("a lost connection (1006) reconnects with a doubling backoff and resumes", async () => {
  const { client, clock, socket, events } = setup();
  client.startServer();
  socket().open();
  assert.deepEqual(socket().commands, [{ type: "start_tracking" }]);

  socket().drop(1006);
  await flush();
  const close = events.findLast(([t]) => t === "close")[1];
  assert.equal(close.reconnectInMs, 500);
  assert.ok(events.some(([t, d]) => t === "problem" && d.kind === "connection-lost"));
  await clock.advance(499);
  assert.equal(FakeSocket.made.length, 1);
  await clock.advance(1);
  assert.equal(FakeSocket.made.length, 2);

  // This one fails during the handshake: /access is asked why, and the wait doubles.
  socket().drop(1006);
  await clock.advance(0);
  assert.equal(events.findLast(([t]) => t === "close")[1].reconnectInMs, 1000);
  await clock.advance(1000);
  assert.equal(FakeSocket.made.length, 3);

  socket().open(); // a whole handshake resets the backoff, and tracking resumes
  assert.deepEqual(socket().commands, [{ type: "start_tracking" }]);
  socket().drop(1001, "server shutting down");
  await flush();
  assert.equal(events.findLast(([t]) => t === "close")[1].reconnectInMs, 500);
});

test("the backoff stops doubling at its maximum", async () => {
  const { client, clock, events } = setup();
  client.startServer();
  const delays = [];
  for (let i = 0; i < 7; i++) {
    FakeSocket.made.at(-1).drop(1006);
    await clock.advance(0);
    const delay = events.findLast(([t]) => t === "close")[1].reconnectInMs;
    delays.push(delay);
    await clock.advance(delay);
  }
  assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 10000, 10000]);
});

test("push mode resumes on the new connection with a new session", async () => {
  const { client, clock, socket } = pushing();
  await clock.advance(10);
  assert.equal(socket().frames.length, 1);
  socket().drop(1006);
  await clock.advance(500);
  const second = socket();
  second.open();
  assert.deepEqual(second.commands, [{ type: "start_tracking", source: "client" }]);
  await clock.advance(10);
  assert.equal(second.frames.length, 0, "nothing before the new session starts");
  second.receive(started());
  await clock.advance(0);
  assert.equal(second.frames.length, 1);
});

for (const [status, kind] of [
  [401, "unauthorized"],
  [403, "forbidden"],
]) {
  test(`a handshake refused with ${status} is reported and not retried`, async () => {
    const { client, clock, probes, events } = setup({ verdict: { status, reason: "no" } });
    client.startServer();
    FakeSocket.made.at(-1).drop(1006);
    await clock.advance(60000);
    assert.equal(FakeSocket.made.length, 1);
    assert.deepEqual(probes, ["http://tracker.test:5000/access?token=t0k"]);
    const problem = events.find(([t]) => t === "problem")[1];
    assert.equal(problem.kind, kind);
    assert.equal(problem.status, status);
    assert.equal(events.find(([t]) => t === "close")[1].reconnectInMs, null);
  });
}

test("a full server (503) is retried", async () => {
  const { client, clock, events } = setup({ verdict: { status: 503, reason: "full" } });
  client.startServer();
  FakeSocket.made.at(-1).drop(1006);
  await clock.advance(500);
  assert.equal(FakeSocket.made.length, 2);
  assert.equal(events.find(([t]) => t === "problem")[1].kind, "busy");
});

test("a push session closed for sending nothing (a hidden tab) reconnects and resumes", async () => {
  const { clock, socket, events } = pushing();
  await clock.advance(10);
  socket().drop(1008, "session_idle");
  await clock.advance(500);
  assert.equal(FakeSocket.made.length, 2);
  assert.equal(events.find(([t]) => t === "problem")[1].kind, "connection-lost");
  socket().open();
  assert.deepEqual(socket().commands, [{ type: "start_tracking", source: "client" }]);
});

test("other close codes, and close(), do not reconnect", async () => {
  const { client, clock, socket, events } = setup();
  client.startServer();
  socket().open();
  socket().drop(1008, "session_over_budget");
  await clock.advance(60000);
  assert.equal(FakeSocket.made.length, 1);
  assert.equal(events.find(([t]) => t === "problem")[1].kind, "closed");

  client.startServer();
  socket().open();
  client.close();
  await clock.advance(60000);
  assert.equal(FakeSocket.made.length, 2);
  assert.deepEqual(socket().commands.at(-1), { type: "stop_tracking" });
});

/** A canvas that counts how often its size is set (each set reallocates a real one). */
class FakeCanvas {
  constructor() {
    this.sizeSets = 0;
    this.w = 300; // a new canvas's size
    this.h = 150;
  }
  get width() {
    return this.w;
  }
  set width(value) {
    this.sizeSets += 1;
    this.w = value;
  }
  get height() {
    return this.h;
  }
  set height(value) {
    this.sizeSets += 1;
    this.h = value;
  }
  getContext() {
    return { drawImage() {} };
  }
  toBlob(done) {
    done({ size: 100 });
  }
}

test("the grabber sizes its canvas when the video's size changes, not at every frame", async () => {
  const canvas = new FakeCanvas();
  globalThis.document = { createElement: () => canvas };
  try {
    const video = { readyState: 4, videoWidth: 1280, videoHeight: 720 };
    const grab = canvasGrabber(video, { maxWidth: 640 });
    for (let i = 0; i < 5; i++) assert.deepEqual((await grab()).width, 640);
    assert.equal(canvas.sizeSets, 2, "width and height, once");
    [video.videoWidth, video.videoHeight] = [640, 480];
    for (let i = 0; i < 5; i++) assert.deepEqual((await grab()).height, 480);
    assert.equal(canvas.sizeSets, 4, "and once more for the new size");
  } finally {
    delete globalThis.document;
  }
});
