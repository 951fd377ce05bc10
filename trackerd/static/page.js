// The live page at /: what the tracker sees, drawn over the video, with the client module.
// /?autostart=1 starts this browser's camera without a click (kiosks, tests);
// /?autostart=server starts the server's camera; /?token=… is passed on to the WebSocket.

import { TrackerClient } from "/trackerd.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const WINDOW_MS = 30000; // the timeline's span
const KEEP = 10000; // eye_data kept in window.trackerd.received (for tests and the console)

const client = new TrackerClient({ token: params.get("token") || undefined });
const video = $("video");
const overlay = $("overlay");
const timeline = [];
let frameSize = null; // [width, height] of the frames sent, in push mode
let mode = null;

// For the console and for tests: what the page received, bounded.
window.trackerd = { client, received: [], problems: [] };

client.on("eye_data", (data) => {
  const received = window.trackerd.received;
  received.push({ at: performance.now(), mode, session: client.session?.session ?? null, ...data });
  if (received.length > KEEP) received.splice(0, received.length - KEEP);
  timeline.push({ at: performance.now(), away: data.looking_away });
  forget(performance.now());
  show(data);
  hideProblem();
});
client.on("frame", (frame) => {
  frameSize = [frame.width, frame.height];
});
client.on("problem", (problem) => {
  window.trackerd.problems.push(problem);
  $("problem").textContent = problem.message;
  $("problem").dataset.kind = problem.kind;
  $("problem").hidden = false;
});
client.on("open", () => setConnection("connected"));
client.on("close", ({ reconnectInMs }) =>
  setConnection(reconnectInMs === null ? "disconnected" : `reconnecting in ${(reconnectInMs / 1000).toFixed(1)} s`),
);

$("mine").addEventListener("click", startMine);
$("server").addEventListener("click", startServer);
$("stop").addEventListener("click", stop);

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
  $("faces").textContent = String(data.face_count ?? "–");
  $("frame").textContent = String(data.frame ?? "–");
  const { fps, latencyMs } = client.stats;
  $("fps").textContent = fps.toFixed(1);
  $("latency").textContent = latencyMs === null ? "–" : `${Math.round(latencyMs)} ms`;
  drawBoxes(data);
}

function drawBoxes(data) {
  const context = overlay.getContext("2d");
  if (mode !== "client" || frameSize === null) {
    context.clearRect(0, 0, overlay.width, overlay.height);
    return;
  }
  // The canvas takes the frame's size; CSS fits it over the video exactly as the video is fitted.
  [overlay.width, overlay.height] = frameSize;
  context.lineWidth = Math.max(2, frameSize[0] / 200);
  context.strokeStyle = data.looking_away ? "#ff5555" : "#3fb950";
  if (Array.isArray(data.face)) context.strokeRect(...data.face);
  context.strokeStyle = "#58a6ff";
  for (const eye of data.eyes ?? []) context.strokeRect(...eye);
}

/** Samples older than the timeline's span (here too: a hidden tab draws no frames). */
function forget(now) {
  while (timeline.length && timeline[0].at < now - WINDOW_MS) timeline.shift();
}

function drawTimeline() {
  const now = performance.now();
  forget(now);
  const canvas = $("timeline");
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  for (let i = 0; i < timeline.length; i++) {
    const sample = timeline[i];
    // Each sample lasts until the next one, or 1 s at most (a gap is no data, not a state).
    const end = Math.min(timeline[i + 1]?.at ?? now, sample.at + 1000);
    // Whole pixels: fractional edges would blend into stripes between adjacent samples.
    const x0 = Math.floor(((sample.at - (now - WINDOW_MS)) / WINDOW_MS) * width);
    const x1 = Math.ceil(((end - (now - WINDOW_MS)) / WINDOW_MS) * width);
    context.fillStyle = sample.away ? "#cf222e" : "#2da44e";
    context.fillRect(x0, 0, Math.max(1, x1 - x0), height);
  }
  requestAnimationFrame(drawTimeline);
}

setMode(null, "nothing yet");
setConnection("not connected");
requestAnimationFrame(drawTimeline);
if (params.get("autostart") === "1") startMine();
else if (params.get("autostart") === "server") startServer();
