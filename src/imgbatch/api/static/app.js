// imgbatch page: plain JavaScript, no build step, no dependencies.
//
// The API key lives in sessionStorage (this tab only) and travels in the Authorization header,
// never in a URL: that is why the event stream is read with fetch() instead of EventSource,
// which cannot send headers. Every text from the server is put in the page with textContent.

const KEY_STORAGE = "imgbatch.key";
const PAGE_SIZE = 12;
const FINAL = new Set(["completed", "failed", "cancelled", "expired"]);

const $ = (id) => document.getElementById(id);

const state = {
  keyless: false, // the server answers without a key (IMGBATCH_AUTH_DISABLED): none is asked
  requestId: null,
  status: null,
  counts: null,
  offset: 0,
  total: 0,
  stream: null, // AbortController of the open event stream
  lastEventId: null,
  products: new Map(), // serial_number -> <li> on the current page
  // The newest product events: fresher than a status page, which may be a second or more old
  // (the server caches status answers), so they are laid over every page that is loaded.
  latest: new Map(),
};

const PRODUCT_DONE = new Set(["completed", "partial", "failed"]);

// ---- HTTP --------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail, retryAfter = null) {
    super(typeof detail === "string" ? detail : detail?.message || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
    // Seconds, from a 429 or 503's Retry-After (digits only; a date is not worth parsing here).
    this.retryAfter = retryAfter;
  }
}

function key() {
  return sessionStorage.getItem(KEY_STORAGE);
}

async function call(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (key()) headers.set("Authorization", `Bearer ${key()}`);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    state.keyless = false;
    forgetKey("That key was refused: it is not valid or has been revoked.");
    throw new ApiError(401, "the API key was refused");
  }
  if (!response.ok) {
    let detail = `HTTP ${response.status}`;
    try {
      detail = (await response.json()).detail;
    } catch {
      /* not JSON: keep the status line */
    }
    const retryAfter = /^\d+$/.test(response.headers.get("Retry-After") || "")
      ? Number(response.headers.get("Retry-After"))
      : null;
    throw new ApiError(response.status, detail, retryAfter);
  }
  return response;
}

const getJson = async (path) => (await call(path)).json();

// ---- key ---------------------------------------------------------------------------------

// A server with authentication switched off answers a call without a key: then the page shows
// no key form at all. Any other answer (401, or the server unreachable) asks for a key.
async function detectKeyless() {
  if (key()) return;
  try {
    state.keyless = (await fetch("/api/requests?limit=1")).ok;
  } catch {
    state.keyless = false;
  }
}

function showApp() {
  const has = Boolean(key()) || state.keyless;
  $("key-section").hidden = has;
  $("app").hidden = !has;
  $("who").hidden = !key();
  if (has) {
    $("key-hint").textContent = "Key kept for this tab";
    loadProfiles();
    loadHistory();
  }
}

function forgetKey(message = "") {
  sessionStorage.removeItem(KEY_STORAGE);
  stopStream();
  $("key-error").textContent = message;
  $("key").value = "";
  showApp();
  $("key").focus();
}

// ---- upload ------------------------------------------------------------------------------

async function loadProfiles() {
  const select = $("profile");
  let names = ["default"];
  try {
    const body = await getJson("/api/profiles");
    const list = Array.isArray(body) ? body : body.profiles || [];
    const found = list.map((p) => (typeof p === "string" ? p : p.name)).filter(Boolean);
    if (found.length) names = found;
  } catch {
    // No profiles endpoint on this server (404): everything is the default profile.
  }
  select.replaceChildren(...names.map((name) => new Option(name, name)));
}

function chooseFile(file) {
  $("file-name").textContent = file ? `${file.name} (${file.size.toLocaleString()} bytes)` : "No file chosen";
  $("upload").disabled = !file;
}

async function upload(event) {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("profile", $("profile").value);
  $("upload-error").replaceChildren();
  $("upload").disabled = true;
  try {
    const accepted = await (await call("/api/upload", { method: "POST", body: form })).json();
    openRequest(accepted.request_id);
    loadHistory();
  } catch (error) {
    showUploadError(error);
  } finally {
    $("upload").disabled = !$("file").files[0];
  }
}

function showUploadError(error) {
  const box = $("upload-error");
  const rows = error.detail?.errors;
  if (error.status !== 422 || !Array.isArray(rows)) {
    box.textContent = `Upload refused: ${error.message}`;
    return;
  }
  const table = document.createElement("table");
  table.id = "row-errors";
  const caption = table.createCaption();
  caption.textContent = error.detail.message;
  const head = table.createTHead().insertRow();
  for (const name of ["Line", "Column", "Reason"]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = name;
    head.append(th);
  }
  const body = table.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    for (const value of [row.line, row.column ?? "", row.reason]) tr.insertCell().textContent = String(value ?? "");
  }
  const wrap = document.createElement("div");
  wrap.className = "table-wrap";
  wrap.append(table);
  box.replaceChildren(wrap);
  if (error.detail.omitted_errors) {
    const more = document.createElement("p");
    more.textContent = `…and ${error.detail.omitted_errors} more.`;
    box.append(more);
  }
}

// ---- one request: progress, events, gallery, actions -------------------------------------

async function openRequest(requestId) {
  stopStream();
  Object.assign(state, { requestId, offset: 0, lastEventId: null, status: null, counts: null });
  state.latest.clear();
  $("request-section").hidden = false;
  $("notice").hidden = true;
  $("request-id").textContent = requestId;
  $("request-file").textContent = "";
  $("action-error").textContent = "";
  $("gallery").replaceChildren();
  markHistory();
  $("request-title").focus();
  await loadPage();
  startStream();
}

// "1 image", "5 images".
function plural(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

function render(counts, status) {
  if (counts) state.counts = counts;
  if (status) state.status = status;
  const c = state.counts;
  if (c) {
    const total = c.images_total || 0;
    const pct = (n) => (total ? (100 * n) / total : 0);
    $("fill-done").style.width = `${pct(c.images_done)}%`;
    $("fill-failed").style.width = `${pct(c.images_failed)}%`;
    $("percent").textContent = `${c.progress} %`;
    $("bar").setAttribute("aria-valuenow", String(c.progress));
    $("counts").textContent =
      `${c.images_done} done · ${c.images_failed} failed · ${plural(total, "image")}` +
      ` (${c.products_done} of ${c.products_total} products)`;
  }
  const s = state.status || "pending";
  const badge = $("status-badge");
  badge.textContent = s.replace("_", " ");
  badge.className = `badge ${s}`;
  const failed = c?.images_failed > 0;
  $("download").disabled = s !== "completed";
  $("download-failed").disabled = !(s === "completed" && failed);
  $("retry").disabled = !(s === "completed" && failed);
  $("cancel").disabled = !(s === "pending" || s === "in_progress");
  $("delete").disabled = !state.requestId;
}

function stopStream() {
  state.stream?.abort();
  state.stream = null;
}

// Server-Sent Events over fetch(): the stream ends at its final event, or when the server's
// connection lifetime runs out; then we reconnect with Last-Event-ID and lose nothing.
async function startStream() {
  const requestId = state.requestId;
  const controller = new AbortController();
  state.stream = controller;
  let failures = 0;
  while (state.stream === controller) {
    try {
      const headers = { Accept: "text/event-stream" };
      if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
      const response = await call(`/api/requests/${requestId}/events`, { headers, signal: controller.signal });
      failures = 0;
      if (await readEvents(response.body, requestId)) return;
    } catch (error) {
      if (controller.signal.aborted) return;
      // 429 (this key holds as many streams as it may) and 503 (this API process is full, or
      // its MongoDB or Redis is down) are "not now": wait as told and try again, then poll.
      const busy = error.status === 429 || error.status === 503;
      if (error.status && !busy) {
        $("action-error").textContent = error.message;
        return;
      }
      if (++failures >= 3) return pollStatus(requestId, controller);
      if (busy) await sleep(Math.min(error.retryAfter ?? 1, 30) * 1000);
    }
    await sleep(500);
  }
}

async function readEvents(body, requestId) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { name: "message", data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += value;
    let newline;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
      if (line === "") {
        if (event.data.length && onEvent(event.name, JSON.parse(event.data.join("\n")), event.id, requestId)) {
          reader.cancel();
          return true;
        }
        event = { name: "message", data: [], id: null };
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event.name = value;
        else if (field === "data") event.data.push(value);
        else if (field === "id") event.id = value;
      }
    }
  }
}

// Returns true on the final event.
function onEvent(name, data, id, requestId) {
  if (requestId !== state.requestId) return true;
  if (id) state.lastEventId = id;
  if (name === "progress") render(data, null);
  else if (name === "status") {
    render(null, data.status);
    if (data.status === "in_progress") scheduleReload(); // its products exist now
  }
  else if (name === "product") {
    state.latest.set(data.serial_number, data);
    updateProduct(data);
  }
  else if (FINAL.has(name)) {
    render(data, data.status);
    loadPage(); // the gallery's final state, including anything a dropped event missed
    loadHistory();
    return true;
  }
  return false;
}

async function pollStatus(requestId, controller) {
  while (state.stream === controller && !controller.signal.aborted) {
    try {
      const body = await getJson(`/api/status/${requestId}?limit=1`);
      render(body, body.status);
      if (FINAL.has(body.status)) return loadPage();
    } catch {
      /* keep trying */
    }
    await sleep(2000);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- gallery -----------------------------------------------------------------------------

async function loadPage() {
  const requestId = state.requestId;
  let body;
  try {
    body = await getJson(`/api/status/${requestId}?offset=${state.offset}&limit=${PAGE_SIZE}`);
  } catch (error) {
    $("action-error").textContent = error.message;
    return;
  }
  if (requestId !== state.requestId) return;
  state.total = body.products_total;
  if (body.file_name) $("request-file").textContent = body.file_name;
  // Counters and status come from the event stream once it has spoken: this page may be older.
  if (!state.counts) render(body, body.status);
  state.products.clear();
  const products = body.products.map((p) => ({ ...p, ...state.latest.get(p.serial_number) }));
  const expected = Math.min(PAGE_SIZE, body.products_total - state.offset);
  const behind = products.length < expected || products.some((p) => !PRODUCT_DONE.has(p.status));
  if (FINAL.has(state.status) && behind) scheduleReload(); // the page predates the final state
  const cards = products.map((product) => {
    const card = productCard(product);
    state.products.set(product.serial_number, card);
    return card;
  });
  $("gallery").replaceChildren(...cards);
  const first = body.products_total ? state.offset + 1 : 0;
  const last = Math.min(state.offset + PAGE_SIZE, body.products_total);
  $("page-info").textContent = `Products ${first}–${last} of ${body.products_total}`;
  $("prev").disabled = state.offset === 0;
  $("next").disabled = last >= body.products_total;
}

let reloadTimer = null;

// A page reloaded at most every 2 s: for products the page did not have yet (a new request's
// first page fills in as its products are created and finish).
function scheduleReload() {
  if (reloadTimer) return;
  reloadTimer = setTimeout(() => {
    reloadTimer = null;
    loadPage();
  }, 2000);
}

function updateProduct(event) {
  const card = state.products.get(event.serial_number);
  if (!card) {
    if (state.products.size < PAGE_SIZE) scheduleReload();
    return;
  }
  const product = { ...card.product, ...event };
  // The event carries the outputs and errors, not the per-image records: records the card got
  // earlier are stale now (a retried image's old error), so the event's fields decide until the
  // next page load brings fresh records (thumbnails included).
  if (!event.images) delete product.images;
  const fresh = productCard(product);
  state.products.set(product.serial_number, fresh);
  card.replaceWith(fresh);
}

// The smallest picture of image i: a thumbnail variant where the server made one (profiles
// with variants add `images[i].variants`), else the output itself.
function picture(product, i) {
  const variants = product.images?.[i]?.variants;
  if (variants && Object.keys(variants).length) {
    if (variants.thumbnail?.url) return variants.thumbnail.url;
    const smallest = Object.values(variants)
      .filter((v) => v?.url)
      .sort((a, b) => (a.width || Infinity) - (b.width || Infinity))[0];
    if (smallest) return smallest.url;
  }
  return product.images?.[i]?.output_url || product.output_image_urls?.[i] || null;
}

function errorCode(product, i) {
  const image = product.images?.[i];
  if (image?.error) return image.error.code;
  const url = product.input_image_urls?.[i];
  return product.errors?.find((e) => e.url === url)?.code || null;
}

function productCard(product) {
  const card = document.createElement("li");
  card.className = "product";
  card.product = product;
  const title = document.createElement("h4");
  const serial = document.createElement("span");
  serial.className = "serial";
  serial.textContent = `#${product.serial_number} `;
  title.append(serial, product.product_name ?? "");
  const status = document.createElement("span");
  status.className = `badge ${product.status}`;
  status.textContent = product.status;
  const images = document.createElement("div");
  images.className = "images";
  const count = product.input_image_urls?.length ?? product.output_image_urls?.length ?? 0;
  for (let i = 0; i < count; i++) {
    // A button: a click (or Enter) on an image opens its record.
    const cell = document.createElement("button");
    cell.type = "button";
    cell.className = "image";
    cell.setAttribute("aria-label", `Image ${i + 1} of ${product.product_name ?? "product"}: details`);
    cell.addEventListener("click", () => showRecord(product.serial_number, i));
    const code = errorCode(product, i);
    const url = picture(product, i);
    if (code) {
      cell.classList.add("failed");
      const badge = document.createElement("span");
      badge.className = "failed-badge";
      badge.textContent = code;
      badge.title = product.errors?.find((e) => e.code === code)?.message || code;
      cell.append(badge);
    } else if (url) {
      const img = document.createElement("img");
      img.src = url;
      img.loading = "lazy";
      img.decoding = "async";
      img.alt = `${product.product_name}, image ${i + 1}`;
      img.width = 150;
      img.height = 150;
      cell.append(img);
    } else {
      const waiting = document.createElement("span");
      waiting.className = "waiting";
      waiting.textContent = product.status === "processing" ? "working…" : "waiting";
      cell.append(waiting);
    }
    const warnings = product.images?.[i]?.warnings;
    if (Array.isArray(warnings) && warnings.length) {
      const badge = document.createElement("span");
      badge.className = "warn-badge";
      badge.textContent = `⚠ ${warnings.length}`;
      badge.title = warnings.map(warningText).join("\n");
      cell.append(badge);
    }
    images.append(cell);
  }
  card.append(title, status, images);
  return card;
}

// ---- one image's record ------------------------------------------------------------------

// A warning as the record gives it: a kind ("too_small"), or an object naming one.
function warningText(warning) {
  if (typeof warning === "string") return warning;
  const kind = warning?.kind || warning?.code || "warning";
  return warning?.message ? `${kind}: ${warning.message}` : kind;
}

const EXIF_LABELS = {
  make: "Make",
  model: "Model",
  lens: "Lens",
  taken_at: "Taken",
  orientation: "Orientation",
  software: "Software",
  has_gps: "GPS position",
  latitude: "Latitude",
  longitude: "Longitude",
};

const kb = (n) => (n >= 1024 ? `${(n / 1024).toFixed(1)} KB` : `${n} bytes`);

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

// Pairs of [term, value] as a <dl>; values that are null or empty are left out.
function facts(pairs) {
  const list = element("dl", undefined, "facts");
  for (const [term, value] of pairs) {
    if (value === null || value === undefined || value === "") continue;
    list.append(element("dt", term));
    const dd = element("dd");
    dd.append(value instanceof Node ? value : String(value));
    list.append(dd);
  }
  return list;
}

// Only http(s) addresses become links: a record's URL is someone else's text.
function link(url, text) {
  if (!/^https?:\/\//i.test(url || "")) return element("span", text ?? url ?? "");
  const a = element("a", text ?? url);
  a.href = url;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  return a;
}

// The record comes fresh from the server: the card's copy may predate a retry or be cut down
// to what an event carried.
async function showRecord(serial, index) {
  const requestId = state.requestId;
  let product = state.products.get(serial)?.product;
  const position = [...state.products.keys()].indexOf(serial);
  try {
    const body = await getJson(`/api/status/${requestId}?offset=${state.offset + Math.max(0, position)}&limit=1`);
    product = body.products.find((p) => p.serial_number === serial) || product;
  } catch (error) {
    $("action-error").textContent = error.message;
  }
  if (!product || requestId !== state.requestId) return;
  const image = product.images?.[index] || { index, url: product.input_image_urls?.[index], status: "pending" };
  $("record-title").textContent = `#${product.serial_number} ${product.product_name ?? ""} · image ${index + 1}`;
  const body = $("record-body");
  body.replaceChildren();
  const head = element("div", undefined, "record-status");
  head.append(element("span", image.status, `badge ${image.status === "done" ? "completed" : image.status}`));
  const warnings = Array.isArray(image.warnings) ? image.warnings : [];
  if (warnings.length) head.append(element("span", `⚠ ${plural(warnings.length, "warning")}`, "badge warning"));
  body.append(head);
  if (image.error) body.append(element("p", `${image.error.code}: ${image.error.message}`, "error record-error"));
  if (warnings.length) {
    const list = element("ul", undefined, "warnings");
    for (const warning of warnings) list.append(element("li", warningText(warning)));
    body.append(list);
  }
  const preview = picture(product, index);
  const layout = element("div", undefined, "record-layout");
  if (preview && !image.error) {
    const img = element("img");
    img.src = preview;
    img.alt = `${product.product_name}, image ${index + 1}`;
    layout.append(img);
  }
  let colour = null;
  if (image.dominant_color) {
    colour = element("span", image.dominant_color, "colour");
    const swatch = element("span", undefined, "swatch");
    swatch.style.background = /^#[0-9a-f]{3,8}$/i.test(image.dominant_color) ? image.dominant_color : "transparent";
    colour.prepend(swatch);
  }
  const source = image.source;
  layout.append(
    facts([
      ["Source URL", link(image.url)],
      ["Original", source && `${source.format.toUpperCase()} · ${source.width} × ${source.height} px · ${kb(source.bytes)}`],
      ["SHA-256", source && element("code", source.sha256)],
      ["Colour", colour],
      ["Processed in", image.processing_ms != null ? `${image.processing_ms} ms` : null],
      ["Reused", image.reused],
    ]),
  );
  body.append(layout);
  const variants = Object.entries(image.variants || {});
  if (variants.length) {
    body.append(element("h3", "Variants"));
    const table = element("table", undefined, "variants");
    const headRow = table.createTHead().insertRow();
    for (const name of ["Variant", "Size", "File"]) headRow.append(Object.assign(element("th", name), { scope: "col" }));
    const rows = table.createTBody();
    for (const [name, v] of variants) {
      const tr = rows.insertRow();
      tr.insertCell().append(link(v.url, name));
      tr.insertCell().textContent = `${v.width} × ${v.height} px`;
      tr.insertCell().textContent = `${v.format.toUpperCase()} · ${kb(v.bytes)}`;
    }
    const wrap = element("div", undefined, "table-wrap");
    wrap.append(table);
    body.append(wrap);
  }
  const exif = Object.entries(image.exif || {}).filter(([, v]) => v !== null && v !== false);
  if (exif.length) {
    body.append(element("h3", "EXIF"));
    body.append(facts(exif.map(([k, v]) => [EXIF_LABELS[k] || k, v === true ? "yes" : v])));
  }
  $("record").showModal();
}

// ---- actions -----------------------------------------------------------------------------

async function download(onlyFailed) {
  $("action-error").textContent = "";
  try {
    const query = onlyFailed ? "?only=failed" : "";
    const response = await call(`/api/download/${state.requestId}${query}`);
    const name = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "")?.[1];
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = name || `imgbatch-${state.requestId}.csv`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  } catch (error) {
    $("action-error").textContent = error.message;
  }
}

async function control(action) {
  $("action-error").textContent = "";
  try {
    const body = await (await call(`/api/requests/${state.requestId}/${action}`, { method: "POST" })).json();
    render(null, body.status);
    if (action === "retry") {
      stopStream();
      state.lastEventId = null;
      state.counts = null;
      state.latest.clear();
      await loadPage();
      startStream();
    }
    loadHistory();
  } catch (error) {
    $("action-error").textContent = error.message;
  }
}

function askDelete() {
  $("confirm-id").textContent = state.requestId;
  const dialog = $("confirm-delete");
  dialog.returnValue = "";
  dialog.showModal();
}

// DELETE /api/requests/{id}: the server cancels a running request first, then removes it.
async function deleteRequest() {
  const requestId = state.requestId;
  $("action-error").textContent = "";
  $("delete").disabled = true;
  try {
    await call(`/api/requests/${requestId}`, { method: "DELETE" });
  } catch (error) {
    $("action-error").textContent = error.message;
    $("delete").disabled = false;
    return;
  }
  if (requestId === state.requestId) {
    stopStream();
    Object.assign(state, { requestId: null, status: null, counts: null, lastEventId: null });
    state.products.clear();
    state.latest.clear();
    $("gallery").replaceChildren();
    $("request-section").hidden = true;
  }
  const notice = $("notice");
  notice.textContent = `Request ${requestId} was deleted.`;
  notice.hidden = false;
  loadHistory();
}

// ---- history -----------------------------------------------------------------------------

async function loadHistory() {
  let body;
  try {
    body = await getJson("/api/requests?limit=10");
  } catch {
    return;
  }
  const items = body.requests.map((r) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.id = r.request_id;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = r.file_name || r.request_id.slice(0, 12);
    const status = document.createElement("span");
    status.className = `badge ${r.status}`;
    status.textContent = r.status.replace("_", " ");
    const progress = document.createElement("span");
    progress.textContent =
      `${r.progress} % · ${plural(r.images_total, "image")}` +
      (r.images_failed ? ` · ${r.images_failed} failed` : "");
    const when = document.createElement("time");
    when.className = "when";
    when.dateTime = r.created_at;
    when.textContent = new Date(r.created_at).toLocaleString();
    button.append(name, status, progress, when);
    button.addEventListener("click", () => openRequest(r.request_id));
    li.append(button);
    return li;
  });
  $("history").replaceChildren(...items);
  $("history-empty").hidden = items.length > 0;
  markHistory();
}

function markHistory() {
  for (const button of $("history").querySelectorAll("button")) {
    button.setAttribute("aria-current", String(button.dataset.id === state.requestId));
  }
}

// ---- wiring ------------------------------------------------------------------------------

function wire() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("key").value.trim();
    if (!value) return;
    sessionStorage.setItem(KEY_STORAGE, value);
    $("key").value = "";
    $("key-error").textContent = "";
    showApp();
    $("file").focus();
  });
  $("forget-key").addEventListener("click", () => forgetKey());
  $("file").addEventListener("change", () => chooseFile($("file").files[0]));
  $("upload-form").addEventListener("submit", upload);
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) drop.addEventListener(name, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer?.files?.[0];
    if (!file) return;
    const files = new DataTransfer();
    files.items.add(file);
    $("file").files = files.files;
    chooseFile(file);
  });
  $("prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE_SIZE);
    loadPage();
  });
  $("next").addEventListener("click", () => {
    state.offset += PAGE_SIZE;
    loadPage();
  });
  $("download").addEventListener("click", () => download(false));
  $("download-failed").addEventListener("click", () => download(true));
  $("retry").addEventListener("click", () => control("retry"));
  $("cancel").addEventListener("click", () => control("cancel"));
  $("delete").addEventListener("click", askDelete);
  $("confirm-delete").addEventListener("close", () => {
    if ($("confirm-delete").returnValue === "delete") deleteRequest();
  });
  $("refresh-history").addEventListener("click", loadHistory);
  detectKeyless().then(showApp);
}

wire();
