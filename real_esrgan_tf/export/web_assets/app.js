/* real-esrgan-tf in the browser: upscales an image with the TF.js graph model in model/, tile by tile.
 *
 * The tiling, padding, rounding, gray and alpha rules are those of `real-esrgan-tf upscale`
 * (real_esrgan_tf/tiling.py and serve/upscaler.py), so the page and the command give the same pixels.
 * The tile rule is exported for Node (module.exports) so a test checks it against Python's plan_tiles.
 * The same file runs as the page's script and as its Web Worker: TF.js runs in the worker, so the tab
 * stays responsive on every backend (the CPU backend computes a whole tile without yielding).
 */
"use strict";

// ---------------------------------------------------------------------------------------------
// The tile rule (a port of real_esrgan_tf/tiling.py: window_size, tile_count, core_span, plan_tiles)

function roundUp(value, multiple) {
  return Math.ceil(value / multiple) * multiple;
}

/** The window along an axis of `size` pixels for cores of `core` > 0 pixels: core + 2 pad, at most the axis. */
function windowSize(size, core, pad) {
  return Math.min(core + 2 * pad, size);
}

/** Number of cores of `core` > 0 pixels covering `size` pixels. */
function tileCount(size, core) {
  return Math.floor((size + core - 1) / core);
}

/** [core start, core end, window start] of tile `index`; the window slides back inside at the border. */
function coreSpan(index, size, core, pad, window) {
  const c0 = index * core;
  return [c0, Math.min(c0 + core, size), Math.max(0, Math.min(c0 - pad, size - window))];
}

function planAxis(size, core, pad) {
  if (core <= 0) core = size;
  const window = windowSize(size, core, pad);
  const spans = [];
  for (let i = 0; i < tileCount(size, core); i++) spans.push(coreSpan(i, size, core, pad, window));
  return [window, spans];
}

/**
 * Tiles covering a height x width image: tile = core side (0 = one window over the whole image),
 * tilePad = context on each side, align = multiple for tile, pad and window starts (2 / 4 for the
 * x2 / x1 pixel-unshuffle nets). Returns {winH, winW, tiles: [{y0, y1, x0, x1, winY, winX}]}.
 */
function planTiles(height, width, tile, tilePad, align = 1) {
  if (tile > 0) tile = roundUp(tile, align);
  tilePad = roundUp(tilePad, align);
  const [winH, ys] = planAxis(height, tile, tilePad);
  const [winW, xs] = planAxis(width, tile, tilePad);
  const tiles = [];
  for (const [y0, y1, winY] of ys) for (const [x0, x1, winX] of xs) tiles.push({ y0, y1, x0, x1, winY, winX });
  return { winH, winW, tiles };
}

/** numpy.pad(mode="reflect") index for i in [0, size + any): the reflection repeats. */
function reflectIndex(i, size) {
  if (size === 1) return 0;
  const period = 2 * (size - 1);
  const m = i % period;
  return m < size ? m : period - m;
}

if (typeof module !== "undefined") {
  module.exports = { roundUp, windowSize, tileCount, coreSpan, planTiles, reflectIndex };
}

// ---------------------------------------------------------------------------------------------
// The page

const LUMA = [0.299, 0.587, 0.114]; // BT.601, as real_esrgan_tf.images.BT601_LUMA
// Chromium's canvas limits (an output larger than this cannot be shown or encoded as PNG).
const MAX_CANVAS_SIDE = 32767;
const MAX_CANVAS_AREA = 268435456;

// Revalidate model files with the server: a re-export into the same folder is picked up on reload.
const NO_STALE_MODEL = { cache: "no-cache" };

const page = {
  state: "idle", // idle | loading | running | done | error (also on <body data-state>)
  message: "",
  backend: null,
  tileTimesMs: [], // per network call, the last run
  resultUrl: null,
};

if (typeof window !== "undefined" && typeof document !== "undefined") {
  window.realEsrgan = page;
  window.addEventListener("DOMContentLoaded", () => main().catch((e) => fail(e)));
}

function $(id) {
  return document.getElementById(id);
}

function setState(state, message) {
  page.state = state;
  page.message = message || "";
  document.body.dataset.state = state;
  const status = $("status");
  status.textContent = page.message;
  status.className = state === "error" ? "error" : "";
}

function fail(error) {
  const text = error && error.message ? error.message : String(error);
  setState("error", text);
  console.error(error);
}

function yieldToBrowser() {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

let metadata = null; // model.json userDefinedMetadata (the page reads it; the worker loads the model)
async function main() {
  const params = new URLSearchParams(location.search);
  for (const key of ["backend", "tile", "pad", "alpha"]) if (params.has(key)) $(key).value = params.get(key);
  setState("loading", "Reading model/model.json ...");
  try {
    const response = await fetch("model/model.json", NO_STALE_MODEL);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    metadata = (await response.json()).userDefinedMetadata || {};
    if (!Number.isInteger(metadata.scale)) throw new Error("its userDefinedMetadata has no integer scale");
  } catch (e) {
    throw new Error(`The model failed to load: model/model.json: ${e.message}`);
  }
  $("model-name").textContent = `${metadata.name || "model"} (x${metadata.scale})`;
  $("file").addEventListener("change", () => $("file").files[0] && run($("file").files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) run(e.dataTransfer.files[0]);
  });
  $("slider").addEventListener("input", showSplit);
  setState("idle", "Choose or drop an image.");
}

// ---------------------------------------------------------------------------------------------
// The worker: TF.js, the backend and the model live here.

const IN_WORKER = typeof WorkerGlobalScope !== "undefined" && self instanceof WorkerGlobalScope;

if (IN_WORKER) {
  importScripts("vendor/tf.es2017.min.js", "vendor/tf-backend-wasm.es2017.min.js",
    "vendor/tf-backend-webgpu.es2017.min.js");
  let model = null;
  self.onmessage = async (event) => {
    const { id, type } = event.data;
    try {
      if (type === "start") {
        const backend = await useBackend(event.data.backend);
        try {
          model = await tf.loadGraphModel("model/model.json", { requestInit: NO_STALE_MODEL });
        } catch (e) {
          throw new Error(`The model failed to load: model/: ${e.message}`);
        }
        self.postMessage({ id, backend });
      } else if (type === "tile") {
        const started = performance.now();
        const values = await runTile(model, event.data);
        self.postMessage({ id, values, ms: performance.now() - started }, [values.buffer]);
      }
    } catch (e) {
      self.postMessage({ id, error: e && e.message ? e.message : String(e) });
    }
  };
}

async function useBackend(choice) {
  if (typeof tf.wasm !== "undefined") tf.wasm.setWasmPaths("vendor/");
  const order = choice === "auto" ? ["webgpu", "webgl", "wasm", "cpu"] : [choice];
  const failures = [];
  for (const name of order) {
    try {
      if (await tf.setBackend(name)) {
        await tf.ready();
        return name;
      }
      failures.push(`${name}: not available in this browser`);
    } catch (e) {
      failures.push(`${name}: ${e.message}`);
    }
  }
  throw new Error(`No TF.js backend could start (${failures.join("; ")})`);
}

/** One window through the net; returns the core of the output, rounded to uint8 values, as floats. */
async function runTile(model, { window, winH, winW, oy, ox, coreH, coreW, toGray }) {
  const core = tf.tidy(() => {
    const lq = tf.tensor4d(window, [1, winH, winW, 3]);
    let sr = model.execute(lq);
    if (Array.isArray(sr)) sr = sr[0];
    sr = sr.slice([0, oy, ox, 0], [1, coreH, coreW, 3]);
    if (toGray) sr = sr.mul(tf.tensor1d(LUMA)).sum(-1, true);
    // np.rint(np.clip(v, 0, 1) * 255): tf.round rounds half to even, as np.rint; NaN -> 0 as nan_to_num.
    const finite = tf.where(tf.isNaN(sr), tf.zerosLike(sr), sr);
    return finite.clipByValue(0, 1).mul(255).round();
  });
  try {
    return new Float32Array(await core.data()); // a copy: the CPU backend hands out its own buffer
  } finally {
    core.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// The page's side of the worker

let worker = null;
let workerChoice = null;
let workerBackend = null;
const pending = new Map(); // message id -> {resolve, reject}
let nextId = 1;

function callWorker(message, transfer = []) {
  return new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    worker.postMessage({ ...message, id }, transfer);
  });
}

function stopWorker(reason) {
  if (worker) worker.terminate();
  worker = null;
  for (const { reject } of pending.values()) reject(new Error(reason));
  pending.clear();
}

/** A worker running TF.js on the chosen backend with the model loaded; returns the backend's name. */
async function startWorker(choice) {
  if (worker && workerChoice === choice) return workerBackend;
  stopWorker("the backend changed");
  worker = new Worker("app.js");
  worker.onmessage = (event) => {
    const call = pending.get(event.data.id);
    if (!call) return;
    pending.delete(event.data.id);
    if (event.data.error) call.reject(new Error(event.data.error));
    else call.resolve(event.data);
  };
  worker.onerror = (event) => {
    event.preventDefault();
    stopWorker(`The TF.js worker failed: ${event.message || "app.js could not start as a worker"}`);
  };
  workerChoice = choice;
  try {
    workerBackend = (await callWorker({ type: "start", backend: choice })).backend;
  } catch (e) {
    stopWorker(e.message);
    throw e;
  }
  return workerBackend;
}

/** File -> {width, height, rgba: Uint8ClampedArray}, EXIF orientation applied, no colour conversion. */
async function decode(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, {
      premultiplyAlpha: "none",
      colorSpaceConversion: "none",
      imageOrientation: "from-image",
    });
  } catch (e) {
    throw new Error(`${file.name}: not an image this browser can decode (${e.message})`);
  }
  const { width, height } = bitmap;
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  return { width, height, rgba: context.getImageData(0, 0, width, height).data, canvas };
}

/**
 * planes: a function (y, x) -> [r, g, b] in [0, 1] over a height x width image. Runs the net tile by
 * tile over the image reflect-padded to a multiple of `align`, writing rounded uint8 values into
 * out (RGBA, (h s) x (w s)) at the channels `channels` (gray: luma into every one of them).
 */
async function enhanceInto(planes, height, width, out, channels, toGray, progress) {
  const scale = metadata.scale;
  const align = metadata.multiple || { 2: 2, 1: 4 }[scale] || 1;
  const paddedH = roundUp(height, align);
  const paddedW = roundUp(width, align);
  const tile = Math.max(0, parseInt($("tile").value, 10) || 0);
  const pad = Math.max(0, parseInt($("pad").value, 10) || 0);
  const plan = planTiles(paddedH, paddedW, tile, pad, align);
  const tiles = plan.tiles.filter((t) => t.y0 < height && t.x0 < width);
  const outW = width * scale;
  for (const t of tiles) {
    const window = new Float32Array(plan.winH * plan.winW * 3);
    for (let y = 0; y < plan.winH; y++) {
      const sy = reflectIndex(t.winY + y, height);
      for (let x = 0; x < plan.winW; x++) {
        const rgb = planes(sy, reflectIndex(t.winX + x, width));
        const i = (y * plan.winW + x) * 3;
        window[i] = rgb[0];
        window[i + 1] = rgb[1];
        window[i + 2] = rgb[2];
      }
    }
    const y1 = Math.min(t.y1, height);
    const x1 = Math.min(t.x1, width);
    const coreH = (y1 - t.y0) * scale;
    const coreW = (x1 - t.x0) * scale;
    const reply = await callWorker(
      { type: "tile", window, winH: plan.winH, winW: plan.winW, oy: (t.y0 - t.winY) * scale,
        ox: (t.x0 - t.winX) * scale, coreH, coreW, toGray },
      [window.buffer],
    );
    const values = reply.values;
    page.tileTimesMs.push(reply.ms);
    const depth = toGray ? 1 : 3;
    for (let y = 0; y < coreH; y++) {
      const row = (t.y0 * scale + y) * outW + t.x0 * scale;
      for (let x = 0; x < coreW; x++) {
        const o = (row + x) * 4;
        const v = (y * coreW + x) * depth;
        for (let c = 0; c < channels.length; c++) out[o + channels[c]] = values[v + (toGray ? 0 : c)];
      }
    }
    progress();
    await yieldToBrowser(); // the tab stays responsive between tiles
  }
  return tiles.length;
}

async function run(file) {
  page.resultUrl = null;
  page.tileTimesMs = [];
  $("result").hidden = true;
  const bar = $("progress");
  bar.value = 0;
  try {
    setState("loading", `Reading ${file.name} ...`);
    const image = await decode(file);
    const { width, height, rgba } = image;
    const scale = metadata.scale;
    const outW = width * scale;
    const outH = height * scale;
    if (outW > MAX_CANVAS_SIDE || outH > MAX_CANVAS_SIDE || outW * outH > MAX_CANVAS_AREA) {
      throw new Error(
        `${file.name}: ${width}x${height} is too large: the x${scale} result (${outW}x${outH}) exceeds ` +
          `the browser's canvas limit (${MAX_CANVAS_SIDE} px a side, ${MAX_CANVAS_AREA} pixels)`,
      );
    }
    setState("loading", `Starting TF.js (${$("backend").value}) and loading the model ...`);
    page.backend = await startWorker($("backend").value);
    let gray = true;
    let alphaMin = 255;
    let alphaMax = 0;
    for (let i = 0; i < rgba.length; i += 4) {
      if (gray && (rgba[i] !== rgba[i + 1] || rgba[i] !== rgba[i + 2])) gray = false;
      if (rgba[i + 3] < alphaMin) alphaMin = rgba[i + 3];
      if (rgba[i + 3] > alphaMax) alphaMax = rgba[i + 3];
    }
    const alphaByModel = alphaMin !== alphaMax && $("alpha").value === "model";
    const align = metadata.multiple || { 2: 2, 1: 4 }[scale] || 1;
    const tile = Math.max(0, parseInt($("tile").value, 10) || 0);
    const pad = Math.max(0, parseInt($("pad").value, 10) || 0);
    const plan = planTiles(roundUp(height, align), roundUp(width, align), tile, pad, align);
    const perPass = plan.tiles.filter((t) => t.y0 < height && t.x0 < width).length;
    const total = perPass * (alphaByModel ? 2 : 1);
    let done = 0;
    bar.max = total;
    const progress = () => {
      bar.value = ++done;
      setState("running", `Tile ${done} of ${total} on ${page.backend}`);
    };
    setState("running", `Tile 0 of ${total} on ${page.backend}`);
    const out = new Uint8ClampedArray(outW * outH * 4);
    const rgb = (y, x) => {
      const i = (y * width + x) * 4;
      return [rgba[i] / 255, rgba[i + 1] / 255, rgba[i + 2] / 255];
    };
    await enhanceInto(rgb, height, width, out, gray ? [0, 1, 2] : [0, 1, 2], gray, progress);
    if (alphaMin === alphaMax) {
      for (let o = 3; o < out.length; o += 4) out[o] = alphaMin; // constant (opaque): nothing to add
    } else if (alphaByModel) {
      const alpha = (y, x) => {
        const a = rgba[(y * width + x) * 4 + 3] / 255;
        return [a, a, a];
      };
      await enhanceInto(alpha, height, width, out, [3], true, progress);
    } else {
      bicubicAlphaInto(image.canvas, out, outW, outH);
    }
    await showResult(image.canvas, out, outW, outH, file.name);
    const median = [...page.tileTimesMs].sort((a, b) => a - b)[Math.floor(page.tileTimesMs.length / 2)];
    setState(
      "done",
      `Done: ${width}x${height} -> ${outW}x${outH}, ${total} tiles on ${page.backend} ` +
        `(median ${median.toFixed(0)} ms a tile).`,
    );
  } catch (e) {
    fail(e);
  }
}

/** The browser's own smooth resize of the alpha plane (`--alpha bicubic`-like; not pixel-equal). */
function bicubicAlphaInto(source, out, outW, outH) {
  const canvas = document.createElement("canvas");
  canvas.width = outW;
  canvas.height = outH;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.imageSmoothingEnabled = true;
  context.imageSmoothingQuality = "high";
  context.drawImage(source, 0, 0, outW, outH);
  const big = context.getImageData(0, 0, outW, outH).data;
  for (let o = 3; o < out.length; o += 4) out[o] = big[o];
}

async function showResult(inputCanvas, out, outW, outH, name) {
  const after = $("after");
  after.width = outW;
  after.height = outH;
  const context = after.getContext("2d");
  context.putImageData(new ImageData(out, outW, outH), 0, 0);
  if (!canvasHolds(context, out, outW, outH)) {
    throw new Error(`${name}: the browser could not hold the ${outW}x${outH} result (out of canvas memory)`);
  }
  const before = $("before"); // the input at its own size, enlarged by CSS without smoothing
  before.width = inputCanvas.width;
  before.height = inputCanvas.height;
  before.getContext("2d").drawImage(inputCanvas, 0, 0);
  $("viewer").style.width = `${Math.max(480, Math.min(outW, 1060))}px`;
  const blob = await new Promise((resolve) => after.toBlob(resolve, "image/png"));
  if (!blob) throw new Error(`${outW}x${outH}: the browser could not encode the result as PNG`);
  if (page.resultUrl) URL.revokeObjectURL(page.resultUrl);
  page.resultUrl = URL.createObjectURL(blob);
  const link = $("download");
  link.href = page.resultUrl;
  link.download = name.replace(/\.[^.]*$/, "") + `_x${metadata.scale}.png`;
  $("result").hidden = false;
  showSplit();
}

/** A too-large canvas fails silently (it reads back as transparent black): check opaque samples. */
function canvasHolds(context, out, outW, outH) {
  let checked = 0;
  for (let k = 1; k <= 64 && checked < 8; k++) {
    const x = Math.floor((outW * ((k * 37) % 64)) / 64);
    const y = Math.floor((outH * k) / 65);
    const o = (y * outW + x) * 4;
    if (out[o + 3] !== 255 || out[o] + out[o + 1] + out[o + 2] === 0) continue;
    const seen = context.getImageData(x, y, 1, 1).data;
    if (seen[0] !== out[o] || seen[1] !== out[o + 1] || seen[2] !== out[o + 2]) return false;
    checked++;
  }
  return true;
}

function showSplit() {
  const percent = $("slider").value;
  $("after").style.clipPath = `inset(0 0 0 ${percent}%)`;
  $("split").style.left = `${percent}%`;
}
