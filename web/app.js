// NeuraStyle page: pick a photo and a style (a file or a built-in painting), POST them with
// "stream": true, follow the NDJSON progress.
"use strict";


const $ = (id) => document.getElementById(id);
const picked = { content: null, style: null }; // promises of data: URLs
let stylePreset = null; // name of the built-in painting chosen in place of a style file
let defaults = null; // the function's option defaults (GET config); strength is log10 of a factor on style_weight
const touched = new Set(); // ids of the settings the user moved, which a late GET config must not undo
let controller = null; // AbortController of the request in flight
let resultUrl = null;

function apiUrl() {
  const fromQuery = new URLSearchParams(location.search).get("api");
  const meta = document.querySelector('meta[name="neurastyle-api"]');
  return fromQuery || (meta && meta.content.trim()) || "stylize";
}

// --- picking images ---------------------------------------------------------

function showPreview(kind, src, name) {
  const zone = $(kind + "-drop");
  const preview = $(kind + "-preview");
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
  preview.onload = () => { preview.hidden = false; zone.classList.add("has-image"); };
  preview.onerror = () => {
    preview.hidden = true;
    zone.classList.remove("has-image");
    zone.querySelector(".hint").textContent = `No preview for ${name}`;
  };
  preview.src = src;
}

function pick(kind, file) {
  if (!file) return;
  if (kind === "style") choosePreset(null);
  showPreview(kind, URL.createObjectURL(file), file.name);
  picked[kind] = new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`Could not read ${file.name}.`));
    reader.readAsDataURL(file);
  });
}

function setUpPicker(kind) {
  const input = $(kind + "-file");
  const zone = $(kind + "-drop");
  input.addEventListener("change", () => pick(kind, input.files[0]));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    pick(kind, e.dataTransfer.files[0]);
  });
}

// "painter, year" of a built-in painting, leaving out what the function does not know.
function byline(preset) {
  return [preset.painter, preset.year].filter((part) => part).join(", ");
}

// A built-in painting (with its absolute `src`) as the style in place of a file; null: none.
function choosePreset(preset) {
  stylePreset = preset && preset.name;
  for (const radio of $("presets").querySelectorAll("input")) {
    radio.checked = radio.value === stylePreset;
  }
  const credit = $("style-credit");
  credit.hidden = !preset;
  if (!preset) return;
  picked.style = null;
  $("style-file").value = "";
  showPreview("style", preset.src, preset.title);
  const title = document.createElement("cite");
  title.textContent = preset.title;
  credit.replaceChildren(title, byline(preset) && `, ${byline(preset)}`);
}

// One radio button with a thumbnail per built-in painting; `base` is the URL their urls are relative to.
function showPresets(presets, base) {
  const box = $("presets");
  for (const preset of presets) {
    const src = new URL(preset.url, base).href;
    const radio = document.createElement("input");
    radio.type = "radio";
    radio.name = "style-preset";
    radio.value = preset.name;
    radio.addEventListener("change", () => choosePreset({ ...preset, src }));
    const thumb = document.createElement("img");
    thumb.src = src;
    thumb.alt = "";
    const title = document.createElement("span");
    title.textContent = preset.title;
    const label = document.createElement("label");
    label.className = "preset";
    label.title = [preset.title, byline(preset)].filter((part) => part).join(", ");
    label.append(radio, thumb, title);
    box.append(label);
  }
  if (presets.length === 0) return;
  box.hidden = false;
  $("style-drop").querySelector(".hint").textContent = "Choose a file, drop it here or pick a painting";
}

// --- settings ----------------------------------------------------------------

function styleFactor() {
  return Math.pow(10, Number($("strength").value));
}

function showSettings() {
  const f = styleFactor();
  $("strength-value").textContent = (f >= 1 ? f.toFixed(f < 10 ? 1 : 0) : f.toPrecision(2)).replace(/\.0$/, "") + "×";
  $("size-value").textContent = $("size").value;
  $("steps-value").textContent = $("steps").value;
}

// Only what the page shows: the function fills in its defaults for every other option.
function options() {
  const chosen = { size: Number($("size").value), steps: Number($("steps").value) };
  if (!$("strength").disabled) chosen.style_weight = defaults.style_weight * styleFactor();
  if (!$("optimizer").disabled) chosen.optimizer = $("optimizer").value;
  if ($("max-seconds").value) chosen.max_seconds = Number($("max-seconds").value);
  return chosen;
}

// Bounds and starting value of a slider from GET config (missing ones keep the page's own).
function setRange(id, min, max, value) {
  const input = $(id);
  if (Number.isFinite(min)) input.min = min;
  if (Number.isFinite(max)) input.max = max;
  if (!Number.isFinite(value) || touched.has(id)) return;
  // A range snaps its value to min + k × step: keep the function's default reachable.
  if ((value - Number(input.min)) % Number(input.step) !== 0) input.step = 1;
  input.value = value;
}

// The time limits on offer: none above the deployment's ceiling, whose value "The server's" names.
function showTimeLimits(schema) {
  const ceiling = schema.maximum;
  if (!Number.isFinite(ceiling)) return;
  for (const choice of $("max-seconds").options) {
    if (choice.value === "") choice.textContent = `The server's (${secondsText(ceiling).replace("about ", "")})`;
    else choice.disabled = Number(choice.value) > ceiling;
  }
}

// Option defaults, this deployment's limits and the built-in paintings, from GET config beside the API URL.
async function loadConfig() {
  const url = new URL("config", new URL(apiUrl(), location.href));
  let config;
  try {
    const response = await fetch(url);
    if (!response.ok) return;
    config = await response.json();
  } catch (_) {
    return; // Unreachable or old function: the page keeps its own defaults and bounds, no presets.
  }
  defaults = config.defaults || {};
  // Each option's JSON Schema (minimum, maximum, ...); a function without it gives "limits" only.
  const size = (config.options || {}).size || {};
  const steps = (config.options || {}).steps || {};
  const limits = config.limits || {};
  setRange("size", size.minimum ?? limits.min_size, size.maximum ?? limits.max_size, defaults.size);
  setRange("steps", steps.minimum, steps.maximum ?? limits.max_steps, defaults.steps);
  $("strength").disabled = !Number.isFinite(defaults.style_weight);
  if ("optimizer" in defaults) { // an older function rejects the option: then the select stays disabled
    $("optimizer").value = defaults.optimizer;
    $("optimizer").disabled = false;
  }
  showTimeLimits((config.options || {}).max_seconds || {});
  showSettings();
  showPresets(config.style_presets || [], url);
}

// --- feedback ----------------------------------------------------------------

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function setBusy(busy) {
  $("stylize").disabled = busy;
  $("cancel").hidden = !busy;
  $("status").hidden = !busy && $("progress").value === 0;
}

// The bar and "about N s left" move with time: each progress line says how long the run has
// taken and how long it will still take; between lines the page counts down on its own clock.
const clock = { elapsed: 0, left: null, at: 0, fraction: 0, timer: null };

function secondsText(seconds) {
  if (seconds < 1.5) return "about a second";
  if (seconds < 90) return `about ${Math.round(seconds)} s`;
  return `about ${Math.round(seconds / 60)} min`;
}

function showTime() {
  if (clock.left === null) return;
  const since = (performance.now() - clock.at) / 1000;
  const left = Math.max(0, clock.left - since);
  const elapsed = clock.elapsed + since;
  // Never backwards: a new estimate may be longer than the last one was.
  clock.fraction = Math.max(clock.fraction, elapsed / Math.max(elapsed + left, 1e-9));
  $("progress").value = clock.fraction;
  $("time-left").textContent = left > 0 ? `${secondsText(left)} left` : "finishing…";
  $("time-left").dataset.seconds = left.toFixed(2);
}

function startClock() {
  stopClock();
  Object.assign(clock, { elapsed: 0, left: null, at: performance.now(), fraction: 0 });
  $("progress").max = 1;
  $("progress").value = 0;
  $("time-left").textContent = "";
  clock.timer = setInterval(showTime, 250);
}

function stopClock() {
  if (clock.timer !== null) clearInterval(clock.timer);
  clock.timer = null;
}

function showProgress(event) {
  if (Number.isFinite(event.seconds_left) && Number.isFinite(event.elapsed)) {
    Object.assign(clock, { elapsed: event.elapsed, left: event.seconds_left, at: performance.now() });
    showTime();
  }
  const scale = event.scales > 1 ? ` · scale ${event.scale + 1} of ${event.scales}` : "";
  $("step-text").textContent = `Step ${event.step} of ${event.total}${scale}`;
  if (event.preview) {
    $("live").src = "data:image/png;base64," + event.preview;
    $("live").hidden = false;
  }
}

function base64ToBlob(b64, type) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type });
}

function showResult(event) {
  if (resultUrl) URL.revokeObjectURL(resultUrl);
  resultUrl = URL.createObjectURL(base64ToBlob(event.image, "image/png"));
  $("result-image").src = resultUrl;
  $("download").href = resultUrl;
  const cut = event.budget_cut ? " (the time limit cut the plan short)" : "";
  $("result-info").textContent =
    `${event.width}×${event.height} px · ${event.steps} steps${cut} · ${event.elapsed_s.toFixed(1)} s`;
  $("live").hidden = true;
  $("result").hidden = false;
  stopClock();
  $("progress").value = $("progress").max;
  $("time-left").textContent = "";
  $("step-text").textContent = "Done.";
}

// --- talking to the function -------------------------------------------------

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (_) { /* not JSON */ }
  return `The server answered ${response.status} ${response.statusText}.`;
}

// Calls onEvent for each JSON line of an NDJSON response body.
async function readLines(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (line) onEvent(JSON.parse(line));
    }
    if (done) break;
  }
  if (buffer.trim()) onEvent(JSON.parse(buffer));
}

async function stylize(event) {
  event.preventDefault();
  $("error").hidden = true;
  if (!picked.content || !(picked.style || stylePreset)) {
    showError("Pick a content image and a style image first.");
    return;
  }
  let images;
  try {
    images = await Promise.all([picked.content, picked.style]);
  } catch (e) {
    showError(e.message);
    return;
  }
  $("result").hidden = true;
  startClock();
  $("step-text").textContent = "Starting… the first run of a size also compiles the model.";
  $("status").hidden = false;
  controller = new AbortController();
  setBusy(true);
  let finished = false;
  try {
    const response = await fetch(apiUrl(), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        content_image: images[0],
        ...(stylePreset ? { style_preset: stylePreset } : { style_image: images[1] }),
        options: options(),
        stream: true,
      }),
      signal: controller.signal,
    });
    if (!response.ok) {
      showError(await errorMessage(response));
      return;
    }
    await readLines(response, (line) => {
      if (line.type === "progress") showProgress(line);
      else if (line.type === "result") { finished = true; showResult(line); }
      else if (line.type === "error") { finished = true; showError(line.error.message); }
    });
    if (!finished) showError("The connection closed before the result arrived. Please try again.");
  } catch (e) {
    if (e.name === "AbortError") $("step-text").textContent = "Cancelled.";
    else showError(`Could not reach the server (${e.message}).`);
  } finally {
    stopClock();
    if (!finished) $("time-left").textContent = "";
    controller = null;
    setBusy(false);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setUpPicker("content");
  setUpPicker("style");
  for (const id of ["strength", "size", "steps"]) {
    $(id).addEventListener("input", () => { touched.add(id); showSettings(); });
  }
  showSettings();
  loadConfig();
  $("form").addEventListener("submit", stylize);
  $("cancel").addEventListener("click", () => controller && controller.abort());
});
