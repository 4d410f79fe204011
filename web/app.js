// NeuraStyle page: pick a photo and a style (a file or a built-in painting), POST them with
// "stream": true, follow the NDJSON progress.
"use strict";


const $ = (id) => document.getElementById(id);
const picked = { content: null, style: null }; // promises of data: URLs
let stylePreset = null; // name of the built-in painting chosen in place of a style file
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
// Built from GET config's "options", each option's JSON Schema (type, default, bounds, choices,
// description): an option or a choice the function adds shows up here without an edit. The page
// shows a few first, in its own words; every other option a form field can hold is under
// "More settings". Only the options the user changed there are sent; the function's defaults
// fill in the rest.

const MAIN = { size: "Size (px)", steps: "Steps", optimizer: "Optimizer" };
// Set in the page's own way (the strength is a factor on style_weight; the time limits a few
// durations), or a named set of the other options' values, which the page shows one by one.
const OWN = new Set(["style_weight", "max_seconds", "recipe"]);
const TIME_LIMITS = [15, 30, 60, 120]; // s, where the deployment's ceiling allows
const controls = new Map(); // option name -> { schema, main, read() }
let styleWeight = null; // the function's default style_weight; strength is log10 of a factor on it

function styleFactor() {
  return Math.pow(10, Number($("strength").value));
}

function types(schema) {
  return [].concat(schema.type || []);
}

// "content_weight" -> "Content weight"
function labelOf(name) {
  const words = name.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function settingRow(box, name, label, input, output) {
  const text = document.createElement("label");
  text.htmlFor = input.id = "option-" + name.replace(/_/g, "-");
  text.textContent = label;
  box.append(text, input);
  if (output) {
    output.id = input.id + "-value";
    output.htmlFor = input.id;
    box.append(output);
  }
}

// One option's control from its schema, into `box`; false for a value no form field holds (lists, layer weights).
function addControl(box, name, schema, label, main) {
  const kinds = types(schema).filter((kind) => kind !== "null");
  let input, output = null, read;
  if (schema.enum && kinds.length === 1 && kinds[0] === "string") {
    input = document.createElement("select");
    for (const choice of schema.enum) input.add(new Option(choice, choice, false, choice === schema.default));
    read = () => input.value;
  } else if (kinds.length === 1 && kinds[0] === "boolean") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = schema.default === true;
    read = () => input.checked;
  } else if (kinds.length === 1 && (kinds[0] === "integer" || kinds[0] === "number")) {
    input = document.createElement("input");
    const low = schema.minimum ?? schema.exclusiveMinimum;
    if (Number.isFinite(low)) input.min = low;
    if (Number.isFinite(schema.maximum)) input.max = schema.maximum;
    input.step = kinds[0] === "integer" ? 1 : "any";
    if (main && Number.isFinite(low) && Number.isFinite(schema.maximum)) {
      input.type = "range";
      // A range snaps its value to min + k × step: keep the function's default reachable.
      if (name === "size" && (schema.default - low) % 16 === 0) input.step = 16;
      output = document.createElement("output");
    } else {
      input.type = "number";
      if (schema.default === null) input.placeholder = "none";
    }
    if (Number.isFinite(schema.default)) input.value = schema.default;
    read = () => (input.value === "" ? null : Number(input.value));
  } else {
    return false;
  }
  input.title = schema.description || "";
  input.addEventListener("input", showSettings);
  settingRow(box, name, label, input, output);
  controls.set(name, { schema, main, read, input, output });
  return true;
}

// The time limits on offer: none above the deployment's ceiling, whose value "The server's" names.
function addTimeLimits(box, schema) {
  const select = document.createElement("select");
  const ceiling = schema.maximum;
  const server = Number.isFinite(ceiling) ? ` (${secondsText(ceiling).replace("about ", "")})` : "";
  select.add(new Option(`The server's${server}`, "", true, true));
  for (const seconds of TIME_LIMITS) {
    const choice = new Option(seconds < 60 ? `${seconds} s` : `${seconds / 60} min`, seconds);
    choice.disabled = Number.isFinite(ceiling) && seconds > ceiling;
    select.add(choice);
  }
  select.title = schema.description || "";
  settingRow(box, "max_seconds", "Time limit", select);
}

function showSettings() {
  const f = styleFactor();
  $("strength-value").textContent = (f >= 1 ? f.toFixed(f < 10 ? 1 : 0) : f.toPrecision(2)).replace(/\.0$/, "") + "×";
  for (const control of controls.values()) {
    if (control.output) control.output.textContent = control.input.value;
  }
}

// The main settings as shown, the others where changed from the function's default.
function options() {
  const chosen = {};
  for (const [name, control] of controls) {
    const value = control.read();
    if (control.main || value !== control.schema.default) chosen[name] = value;
  }
  if (styleWeight !== null) chosen.style_weight = styleWeight * styleFactor();
  const limit = $("option-max-seconds");
  if (limit && limit.value) chosen.max_seconds = Number(limit.value);
  return chosen;
}

// The settings from GET config beside the API URL, and the built-in paintings. Without it the
// page offers none: the function's defaults apply.
async function loadConfig() {
  const url = new URL("config", new URL(apiUrl(), location.href));
  let config;
  try {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    config = await response.json();
  } catch (e) {
    $("settings-note").textContent = `No settings (GET config failed: ${e.message}); the server's defaults apply.`;
    return;
  }
  const schemas = config.options || {};
  $("settings-note").hidden = true;
  if (schemas.style_weight && Number.isFinite(schemas.style_weight.default)) {
    styleWeight = schemas.style_weight.default;
    $("strength").disabled = false;
  }
  for (const [name, label] of Object.entries(MAIN)) {
    if (schemas[name]) addControl($("settings"), name, schemas[name], label, true);
  }
  if (schemas.max_seconds) addTimeLimits($("settings"), schemas.max_seconds);
  for (const [name, schema] of Object.entries(schemas)) {
    if (!(name in MAIN) && !OWN.has(name) && addControl($("more-options"), name, schema, labelOf(name), false)) {
      $("more-settings").hidden = false;
    }
  }
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
  $("strength").addEventListener("input", showSettings);
  showSettings();
  loadConfig();
  $("form").addEventListener("submit", stylize);
  $("cancel").addEventListener("click", () => controller && controller.abort());
});
