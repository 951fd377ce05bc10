// The live page at /: what the tracker sees, drawn over the video, with the client module.
// /?autostart=1 starts this browser's camera without a click (kiosks, tests);
// /?autostart=server starts the server's camera; /?token=… is passed on to the WebSocket.

import { TrackerClient } from "/trackerd.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const WINDOW_MS = 30000; // the timeline's span
const TICK_MS = 10000; // the timeline's ticks (index.html labels them)
const KEEP = 10000; // eye_data kept in window.trackerd.received (for tests and the console)

const client = new TrackerClient({ token: params.get("token") || undefined });
const video = $("video");
const overlay = $("overlay");
const timeline = [];
/** The colours page.css defines, so the legend and the drawing cannot disagree. */
const css = getComputedStyle(document.documentElement);
const colour = (name) => css.getPropertyValue(`--${name}`).trim();
let drawPending = false; // an animation frame is asked for the timeline
let tickTimer = null; // the timeline's next one-pixel step while samples are in view
let frameSize = null; // [width, height] of the frames sent, in push mode
let mode = null;

// For the console and for tests: what the page received, bounded.
window.trackerd = { client, received: [], problems: [] };

client.on("eye_data", (data) => {
  const received = window.trackerd.received;
  const at = performance.now();
  received.push({ at, mode, session: client.session?.session ?? null, ...data });
  if (received.length > KEEP) received.splice(0, received.length - KEEP);
  timeline.push({ at, away: data.looking_away });
  forget(at);
  show(data);
  drawSoon();
  hideProblem();
});
client.on("frame", (frame) => {
  frameSize = [frame.width, frame.height];
});
client.on("problem", showProblem);
client.on("open", () => setConnection("connected"));
client.on("close", ({ reconnectInMs }) =>
  setConnection(reconnectInMs === null ? "disconnected" : `reconnecting in ${(reconnectInMs / 1000).toFixed(1)} s`),
);

$("mine").addEventListener("click", () => startMine().catch(cameraFailed));
$("server").addEventListener("click", startServer);
$("stop").addEventListener("click", stop);

/** startCamera reports the failures it knows as problems; anything else still reaches the page,
 * and the camera it may have opened is closed. */
function cameraFailed(error) {
  client.stop();
  setMode(null, "nothing (the camera did not start)");
  showProblem({ kind: "camera-unavailable", message: `the camera did not start: ${error?.message ?? error}` });
}

async function startMine() {
  setMode("client", "my camera");
  video.hidden = false;
  $("placeholder").hidden = true;
  if (!(await client.startCamera({ video }))) setMode(null, "nothing (the camera did not start)");
}

function startServer() {
  setMode("server", "the server's camera");
  video.hidden = true;
  video.srcObject = null;
  frameSize = null;
  $("placeholder").hidden = false;
  $("placeholder").textContent = "The server's camera: its video stays on the server; what it sees is on the right.";
  client.startServer();
}

function stop() {
  client.stop();
  setMode(null, "nothing");
}

function setMode(value, label) {
  mode = value;
  $("mode").textContent = label;
  $("mine").setAttribute("aria-pressed", String(value === "client"));
  $("server").setAttribute("aria-pressed", String(value === "server"));
  $("stop").disabled = value === null;
}

function setConnection(text) {
  $("connection").textContent = `${text} (${client.url.host})`;
}

function showProblem(problem) {
  window.trackerd.problems.push(problem);
  $("problem").textContent = problem.message;
  $("problem").dataset.kind = problem.kind;
  $("problem").hidden = false;
}

function hideProblem() {
  if (!$("problem").hidden && $("problem").dataset.kind !== "camera-denied") $("problem").hidden = true;
}

function show(data) {
  const state = $("state");
  state.textContent = data.looking_away ? "Looking away" : "Looking at the screen";
  state.className = `state ${data.looking_away ? "away" : "present"}`;
  $("confidence").value = data.confidence;
  $("confidence-value").textContent = data.confidence.toFixed(2);
  $("face").textContent = data.face_detected ? "found" : "none";
  $("eyes").textContent = String(data.eye_count);
  $("closed").textContent = data.face_detected ? (data.eyes_closed ? "closed" : "open") : "–";
  $("blinks").textContent = String(data.blinks ?? "–");
  $("faces").textContent = String(data.face_count ?? "–");
  $("frame").textContent = String(data.frame ?? "–");
  const { fps, latencyMs } = client.stats;
  $("fps").textContent = fps.toFixed(1);
  $("latency").textContent = latencyMs === null ? "–" : `${Math.round(latencyMs)} ms`;
  drawBoxes(data);
}

function drawBoxes(data) {
  const context = overlay.getContext("2d");
  context.clearRect(0, 0, overlay.width, overlay.height);
  if (mode !== "client" || frameSize === null) return;
  // The canvas takes the frame's size; CSS fits it over the video exactly as the video is fitted.
  // Only when the size changes: setting it reallocates (and clears) the canvas, even to the same.
  if (overlay.width !== frameSize[0] || overlay.height !== frameSize[1]) {
    [overlay.width, overlay.height] = frameSize;
  }
  const line = Math.max(2, frameSize[0] / 200);
  context.lineWidth = line;
  context.strokeStyle = data.looking_away ? "#ff5555" : "#3fb950";
  if (Array.isArray(data.face)) context.strokeRect(...data.face);
  context.strokeStyle = "#58a6ff";
  // Closed eyes are drawn dashed, so the overlay shows them as the panel does.
  context.setLineDash(data.eyes_closed ? [line * 2, line * 2] : []);
  for (const eye of data.eyes ?? []) context.strokeRect(...eye);
  context.setLineDash([]);
  context.fillStyle = colour("pupil");
  for (const pupil of data.pupils ?? []) {
    if (pupil === null) continue; // that eye was not found
    context.beginPath();
    context.arc(pupil[0], pupil[1], line * 1.5, 0, 2 * Math.PI);
    context.fill();
  }
}

/** Samples older than the timeline's span (here too: a hidden tab draws no frames). */
function forget(now) {
  while (timeline.length && timeline[0].at < now - WINDOW_MS) timeline.shift();
}

/** Each sample lasts until the next one, or 1 s at most (a gap is no data, not a state). */
function sampleEnd(i, now) {
  return Math.min(timeline[i + 1]?.at ?? now, timeline[i].at + 1000);
}

/** The timeline at the next animation frame (one draw however many samples came meanwhile). */
function drawSoon() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    drawTimeline();
  });
}

function drawTimeline() {
  const now = performance.now();
  forget(now);
  const canvas = $("timeline");
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  const x = (at) => ((at - (now - WINDOW_MS)) / WINDOW_MS) * width;
  context.clearRect(0, 0, width, height);
  for (let i = 0; i < timeline.length; i++) {
    const sample = timeline[i];
    // Whole pixels: fractional edges would blend into stripes between adjacent samples.
    const x0 = Math.floor(x(sample.at));
    const x1 = Math.ceil(x(sampleEnd(i, now)));
    // Away is full height, at the screen half: the two read apart without their colours.
    const top = sample.away ? 0 : height / 2;
    context.fillStyle = colour(sample.away ? "away" : "present");
    context.fillRect(x0, top, Math.max(1, x1 - x0), height - top);
  }
  context.fillStyle = colour("tick"); // every 10 s, under the axis's labels
  for (let k = 1; k < WINDOW_MS / TICK_MS; k++) context.fillRect(Math.round(x(now - k * TICK_MS)), 0, 1, height);
  describeTimeline(now);
  // The picture moves a pixel every WINDOW_MS / width ms: while samples are in view it is drawn
  // again then, not at every animation frame; with none left nothing moves, and nothing runs.
  clearTimeout(tickTimer);
  tickTimer = timeline.length ? setTimeout(drawSoon, WINDOW_MS / width) : null;
}

/** Runs of looking away in the window: [{start, end}] in performance.now() ms. */
function awayEpisodes(now) {
  const episodes = [];
  let current = null;
  for (let i = 0; i < timeline.length; i++) {
    const { at, away } = timeline[i];
    if (!away) current = null;
    else if (current !== null && current.end >= at) current.end = sampleEnd(i, now);
    else episodes.push((current = { start: at, end: sampleEnd(i, now) }));
  }
  return episodes;
}

/** The timeline in words, for those who do not see it or its colours. */
function describeTimeline(now) {
  const episodes = awayEpisodes(now);
  const total = episodes.reduce((sum, e) => sum + e.end - e.start, 0);
  const longest = episodes.reduce((a, e) => (a === null || e.end - e.start > a.end - a.start ? e : a), null);
  const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;
  let text;
  if (timeline.length === 0) text = "No data in the last 30 s.";
  else if (episodes.length === 0) text = "Last 30 s: at the screen throughout.";
  else {
    const times = episodes.length === 1 ? "once" : `${episodes.length} times`;
    const clock = new Date(performance.timeOrigin + longest.start).toLocaleTimeString("en-GB");
    text =
      `Last 30 s: looking away ${times}, ${seconds(total)} in all; ` +
      `longest ${seconds(longest.end - longest.start)}, from ${clock}.`;
  }
  const element = $("timeline-text");
  if (element.textContent !== text) element.textContent = text;
  // The same figures for programs (and tests), unrounded.
  element.dataset.awayCount = String(episodes.length);
  element.dataset.awayMs = String(Math.round(total));
}

setMode(null, "nothing yet");
setConnection("not connected");
drawTimeline(); // once: the ticks and the words; then only when there is something to draw
if (params.get("autostart") === "1") startMine().catch(cameraFailed);
else if (params.get("autostart") === "server") startServer();
