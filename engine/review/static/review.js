// sladd review: the page. Boxes are [x1, y1, x2, y2] in the upright image's pixels, as in the
// detections record; the overlay's viewBox is the image's size, so SVG units are those pixels.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const COLOURS = { face: "#ffeb3b", person: "#29b6f6", plate: "#ff9800", vehicle: "#ab47bc", car: "#ab47bc",
                  static: "#9e9e9e", correction: "#00e676" };
const LIST_WINDOW = 300;        // list entries drawn around the current one (runs can be large)
const MIN_DRAG = 5;             // screen pixels: less is a click

const kindOf = (r) => (r.source && r.source.kind) || "model";
// engine.worker.regions.Corrections.removes: a remove box drops the model regions it overlaps.
const overlaps = (a, b) => Math.min(a[2], b[2]) > Math.max(a[0], b[0]) && Math.min(a[3], b[3]) > Math.max(a[1], b[1]);

const S = {
  token: new URLSearchParams(location.hash.slice(1)).get("token") || "",
  list: [], pos: -1, key: null, record: null, recordError: null,
  edits: new Map(),             // key -> {add: [box], remove: Map(index -> box), undo: [action]}
  original: false, urls: { image: null, original: null }, load: 0, drag: null,
  filter: { cls: "", min: null, max: null, empty: false },
};

function colour(cls) {
  if (COLOURS[cls]) return COLOURS[cls];
  let h = 0;
  for (const ch of cls) h = (h * 31 + ch.charCodeAt(0)) % 360;
  return `hsl(${h}, 80%, 60%)`;
}

function status(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function state(s) { document.body.dataset.state = s; }

async function api(path, options = {}) {
  const headers = Object.assign({ "X-Sladd-Token": S.token }, options.headers || {});
  const r = await fetch(path, Object.assign({}, options, { headers, cache: "no-store" }));
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON: keep the status line */ }
    throw new Error(msg);
  }
  return r;
}

const q = (key) => "key=" + encodeURIComponent(key);

function editsOf(key, create = false) {
  let e = S.edits.get(key);
  if (!e && create) { e = { add: [], remove: new Map(), undo: [] }; S.edits.set(key, e); }
  return e;
}

function pendingCount() {
  let n = 0;
  for (const e of S.edits.values()) if (e.add.length || e.remove.size) n++;
  return n;
}

// -- the list --------------------------------------------------------------------------------
function drawList() {
  const nav = $("list");
  nav.replaceChildren();
  const lo = Math.max(0, S.pos - LIST_WINDOW / 2), hi = Math.min(S.list.length, lo + LIST_WINDOW);
  if (lo > 0) nav.append(more(`… ${lo} before`));
  for (let i = lo; i < hi; i++) {
    const it = S.list[i], b = document.createElement("button");
    b.type = "button";
    b.dataset.key = it.key;
    b.classList.toggle("current", i === S.pos);
    const e = S.edits.get(it.key);
    b.classList.toggle("edited", !!e && (e.add.length > 0 || e.remove.size > 0));
    const name = document.createElement("span"), n = document.createElement("span");
    name.className = "name"; name.textContent = it.key; name.title = it.key;
    n.className = "n"; n.textContent = it.record ? String(it.regions) : "–";
    b.append(name, n);
    b.addEventListener("click", () => go(i));
    nav.append(b);
  }
  if (hi < S.list.length) nav.append(more(`… ${S.list.length - hi} after`));
  const cur = nav.querySelector(".current");
  if (cur) cur.scrollIntoView({ block: "nearest" });
  $("pos").textContent = S.list.length ? `${S.pos + 1} / ${S.list.length}` : "0 / 0";
  const n = pendingCount();
  $("save").disabled = n === 0;
  $("save").textContent = n ? `Save (${n})` : "Save";
}

function more(text) {
  const d = document.createElement("div");
  d.className = "more"; d.textContent = text;
  return d;
}

// -- one image -------------------------------------------------------------------------------
async function blobURL(kind, key) {
  const r = await api(`/api/${kind}?${q(key)}`);
  return URL.createObjectURL(await r.blob());
}

function setURL(kind, url) {
  if (S.urls[kind]) URL.revokeObjectURL(S.urls[kind]);
  S.urls[kind] = url;
}

async function go(i) {
  if (i < 0 || i >= S.list.length) return;
  S.pos = i; S.key = S.list[i].key; S.original = false;
  drawList();
  await showImage();
}

async function showImage() {
  const key = S.key, ticket = ++S.load;
  state("loading");
  $("key").textContent = key;
  try {
    let record = null, recordError = null;
    try { record = await (await api(`/api/record?${q(key)}`)).json(); } catch (e) { recordError = e.message; }
    const url = await blobURL("image", key);
    if (ticket !== S.load) { URL.revokeObjectURL(url); return; }
    S.record = record; S.recordError = recordError;
    setURL("image", url); setURL("original", null);
    S.original = false;
    await display(url);
    if (ticket !== S.load) return;
    drawOverlay();
    status(recordError ? `${key}: ${recordError}` : `${key}: click a region to remove it, drag to add a box`,
           !!recordError);
    state("ready");
  } catch (e) {
    if (ticket !== S.load) return;
    status(`${key}: ${e.message}`, true);
    state("error");
  }
}

function display(url) {
  const img = $("photo");
  return new Promise((resolve, reject) => {
    img.onload = () => resolve();
    img.onerror = () => reject(new Error("the browser cannot show this image"));
    img.src = url;
  });
}

async function toggleOriginal() {
  if (!S.key) return;
  try {
    if (!S.original && !S.urls.original) setURL("original", await blobURL("original", S.key));
    S.original = !S.original;
    await display(S.original ? S.urls.original : S.urls.image);
    $("banner").hidden = !S.original;
    $("original").setAttribute("aria-pressed", String(S.original));
    drawOverlay();
  } catch (e) { status(`original of ${S.key}: ${e.message}`, true); }
}

function matchesFilter(r) {
  const f = S.filter, s = typeof r.score === "number" && kindOf(r) === "model" ? r.score : null;
  if (f.cls && r.class !== f.cls) return false;
  if (f.min !== null && (s === null || s < f.min)) return false;
  if (f.max !== null && (s === null || s > f.max)) return false;
  return true;
}

function rect(box, cls) {
  const el = document.createElementNS(SVG, "rect");
  el.setAttribute("x", box[0]); el.setAttribute("y", box[1]);
  el.setAttribute("width", Math.max(0, box[2] - box[0])); el.setAttribute("height", Math.max(0, box[3] - box[1]));
  el.setAttribute("class", cls);
  return el;
}

function drawOverlay() {
  const svg = $("overlay"), img = $("photo"), rec = S.record;
  const W = rec ? rec.width : img.naturalWidth, H = rec ? rec.height : img.naturalHeight;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const scale = W / Math.max(1, img.clientWidth), e = editsOf(S.key);
  const regions = rec ? rec.regions : [], gone = dropped(e);
  const area = (b) => (b[2] - b[0]) * (b[3] - b[1]);
  // Larger regions first: a face inside a person's box stays on top, so it can be clicked.
  const order = regions.map((r, i) => i).sort((a, b) => area(regions[b].box) - area(regions[a].box));
  order.forEach((i) => {
    const r = regions[i], kind = kindOf(r), removing = gone.has(i);
    const el = rect(r.box, `region kind-${kind}${removing ? " removing" : ""}${matchesFilter(r) ? "" : " dim"}`);
    el.dataset.index = String(i);
    el.setAttribute("stroke", colour(kind === "model" ? r.class : kind));
    const t = document.createElementNS(SVG, "title");
    const score = typeof r.score === "number" ? ` ${r.score.toFixed(2)}` : "";
    t.textContent = `${r.class}${score} (${kind}${r.source && r.source.card ? ": " + r.source.card : ""})`;
    el.append(t);
    svg.append(el);
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", r.box[0]); label.setAttribute("y", Math.max(12 * scale, r.box[1] - 3 * scale));
    label.setAttribute("font-size", String(12 * scale));
    label.textContent = `${r.class}${score}`;
    svg.append(label);
  });
  (e ? e.add : []).forEach((b, j) => {
    const el = rect(b, "adding");
    el.dataset.add = String(j);
    svg.append(el);
  });
  if (S.drag && S.drag.moved) svg.append(rect(norm(S.drag), "drawing"));
  const found = regions.filter((r) => (r.source || {}).kind === "model").length;
  $("counts").textContent = rec ? `— ${regions.length} region(s), ${found} found by a model` +
    (e && (e.add.length || e.remove.size) ? `; unsaved: ${e.add.length} to add, ${gone.size} to remove` : "") : "";
}

// -- editing ---------------------------------------------------------------------------------
function toImage(ev) {
  const r = $("overlay").getBoundingClientRect(), rec = S.record;
  const x = (ev.clientX - r.left) * rec.width / r.width, y = (ev.clientY - r.top) * rec.height / r.height;
  return { x: Math.min(rec.width, Math.max(0, x)), y: Math.min(rec.height, Math.max(0, y)) };
}

function norm(d) {
  return [Math.round(Math.min(d.x0, d.x1)), Math.round(Math.min(d.y0, d.y1)),
          Math.round(Math.max(d.x0, d.x1)), Math.round(Math.max(d.y0, d.y1))];
}

function onDown(ev) {
  if (ev.button !== 0 || !S.record || document.body.dataset.state !== "ready") return;
  const p = toImage(ev);
  S.drag = { x0: p.x, y0: p.y, x1: p.x, y1: p.y, sx: ev.clientX, sy: ev.clientY, target: ev.target, moved: false };
  $("overlay").setPointerCapture(ev.pointerId);
  ev.preventDefault();
}

function onMove(ev) {
  if (!S.drag) return;
  const p = toImage(ev);
  S.drag.x1 = p.x; S.drag.y1 = p.y;
  S.drag.moved = S.drag.moved || Math.hypot(ev.clientX - S.drag.sx, ev.clientY - S.drag.sy) >= MIN_DRAG;
  drawOverlay();
}

function onUp(ev) {
  const d = S.drag;
  if (!d) return;
  S.drag = null;
  onMoveEnd(d, ev);
  drawList();
  drawOverlay();
}

function onMoveEnd(d, ev) {
  const p = toImage(ev);
  d.x1 = p.x; d.y1 = p.y;
  d.moved = d.moved || Math.hypot(ev.clientX - d.sx, ev.clientY - d.sy) >= MIN_DRAG;
  if (d.moved) {
    const b = norm(d);
    if (b[2] - b[0] < 2 || b[3] - b[1] < 2) return status("too small to add: drag a larger box", true);
    const e = editsOf(S.key, true);
    e.add.push(b); e.undo.push({ add: b });
    return status(`box ${b.join(", ")} to add (unsaved)`);
  }
  const t = d.target;
  if (t.dataset && t.dataset.add !== undefined) {
    const e = editsOf(S.key, true), b = e.add.splice(Number(t.dataset.add), 1)[0];
    e.undo.push({ unadd: b });
    return status("box dropped");
  }
  if (t.dataset && t.dataset.index !== undefined) toggleRemove(Number(t.dataset.index));
}


// A correction's `remove` box drops every model detection it overlaps (engine.correct), now and
// in any later rerun. So the box sent is the region's own box when that touches no other model
// region; else its central third; else a 1-pixel box at the point nearest its centre that no other
// region covers; only when every point is covered, the whole box (and the page shows what goes).
function removeBox(i) {
  const regs = S.record.regions, W = S.record.width, H = S.record.height;
  const clip = (b) => [Math.max(0, b[0]), Math.max(0, b[1]), Math.min(W, b[2]), Math.min(H, b[3])];
  const box = clip(regs[i].box);
  const others = regs.filter((r, j) => j !== i && kindOf(r) === "model").map((r) => r.box);
  const clear = (b) => !others.some((o) => overlaps(b, o));
  if (clear(box)) return box;
  const [x1, y1, x2, y2] = box, w = x2 - x1, h = y2 - y1, cx = (x1 + x2) / 2, cy = (y1 + y2) / 2;
  const centre = [cx - w / 6, cy - h / 6, cx + w / 6, cy + h / 6];
  if (clear(centre)) return centre;
  const pts = [];
  for (let a = 1; a < 16; a++) for (let b = 1; b < 16; b++) pts.push([x1 + (w * a) / 16, y1 + (h * b) / 16]);
  pts.sort((p, o) => Math.hypot(p[0] - cx, p[1] - cy) - Math.hypot(o[0] - cx, o[1] - cy));
  for (const [x, y] of pts) {
    const b = clip([x - 0.5, y - 0.5, x + 0.5, y + 0.5]);
    if (clear(b)) return b;
  }
  return box;
}

// Indexes of the model regions that the pending remove boxes of `e` drop.
function dropped(e) {
  const out = new Set();
  if (!e || !S.record) return out;
  const boxes = [...e.remove.values()];
  S.record.regions.forEach((r, j) => {
    if (kindOf(r) === "model" && boxes.some((b) => overlaps(b, r.box))) out.add(j);
  });
  return out;
}

function toggleRemove(i) {
  const r = S.record.regions[i], kind = kindOf(r);
  if (kind === "static") {
    return status(`a static mask (${(r.source && r.source.mask) || "static_masks"}): change static_masks in the ` +
                  "configuration to remove it", true);
  }
  if (kind !== "model") {
    return status(`a box added by an earlier correction: it is kept in OUTPUT/.sladd/corrections/${S.key}.json ` +
                  "(`sladd correct` removes model detections only)", true);
  }
  const e = editsOf(S.key, true);
  if (e.remove.has(i)) { e.remove.delete(i); e.undo.push({ keep: i }); return status(`${r.class} kept`); }
  e.remove.set(i, removeBox(i)); e.undo.push({ remove: i });
  const also = dropped(e).size - e.remove.size;
  status(`${r.class} at ${r.box.map(Math.round).join(", ")} to remove (unsaved)` +
         (also > 0 ? `; ${also} overlapping region(s) go with it` : ""), also > 0);
}

function undo() {
  const e = editsOf(S.key);
  const a = e && e.undo.pop();
  if (!a) return status("nothing to undo on this image");
  if (a.add) e.add.splice(e.add.lastIndexOf(a.add), 1);
  if (a.unadd) e.add.push(a.unadd);
  if (a.remove !== undefined) e.remove.delete(a.remove);
  if (a.keep !== undefined) e.remove.set(a.keep, removeBox(a.keep));
  drawList(); drawOverlay();
}

function discard() {
  if (S.drag) { S.drag = null; drawOverlay(); return; }
  if (S.edits.delete(S.key)) { status("this image's edits dropped"); drawList(); drawOverlay(); }
}

async function save() {
  const images = [];
  for (const [key, e] of S.edits) {
    if (e.add.length || e.remove.size) images.push({ image: key, add: e.add, remove: [...e.remove.values()] });
  }
  if (!images.length) return status("nothing to save");
  state("saving");
  status(`saving ${images.length} image(s)…`);
  try {
    const r = await api("/api/save", { method: "POST", headers: { "Content-Type": "application/json" },
                                       body: JSON.stringify({ images }) });
    const res = await r.json();
    for (const key of res.rendered) {
      S.edits.delete(key);
      const it = S.list.find((x) => x.key === key), rec = res.records[key];
      if (it && rec) { it.regions = rec.regions.length; }
    }
    drawList();
    if (res.rendered.includes(S.key)) await showImage(); else state("ready");
    status(`saved: re-rendered ${res.rendered.length} image(s): ${res.rendered.join(", ")}`);
  } catch (e) {
    status(`not saved: ${e.message}`, true);
    state("ready");
  }
}

// -- filters, start ----------------------------------------------------------------------------
function readFilter() {
  const num = (id) => ($(id).value === "" ? null : Number($(id).value));
  const empty = $("f-empty").checked;
  return { cls: empty ? "" : $("f-class").value, min: empty ? null : num("f-min"), max: empty ? null : num("f-max"),
           empty };
}

async function applyFilter(ev) {
  if (ev) ev.preventDefault();
  const f = readFilter(), p = new URLSearchParams();
  if (f.cls) p.set("class", f.cls);
  if (f.min !== null) p.set("min_score", String(f.min));
  if (f.max !== null) p.set("max_score", String(f.max));
  if (f.empty) p.set("empty", "1");
  try {
    const res = await (await api(`/api/images?${p}`)).json();
    S.filter = f; S.list = res.images;
    const keep = S.list.findIndex((x) => x.key === S.key);
    status(`${S.list.length} of ${res.total} image(s) match`);
    if (!S.list.length) {
      S.pos = -1; S.key = null; S.record = null;
      $("photo").removeAttribute("src"); $("overlay").replaceChildren(); $("key").textContent = "";
      $("counts").textContent = "";
      drawList(); state("ready");
      return status(`no image of ${res.total} matches these filters`);
    }
    await go(keep >= 0 ? keep : 0);
  } catch (e) { status(`filter: ${e.message}`, true); }
}

function onKey(ev) {
  const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(ev.target.tagName);
  if (typing && ev.key !== "Escape") return;
  const k = ev.key, mod = ev.ctrlKey || ev.metaKey;
  const act = {
    ArrowRight: () => go(S.pos + 1), j: () => go(S.pos + 1), n: () => go(S.pos + 1),
    ArrowLeft: () => go(S.pos - 1), k: () => go(S.pos - 1), p: () => go(S.pos - 1),
    Home: () => go(0), End: () => go(S.list.length - 1), s: save, z: undo, o: toggleOriginal,
    Escape: () => (typing ? ev.target.blur() : discard()), "?": () => { $("help").hidden = !$("help").hidden; },
  }[k.length === 1 ? k.toLowerCase() : k];
  if (!act || (mod && !["s", "z"].includes(k.toLowerCase()))) return;
  ev.preventDefault();
  act();
}

async function start() {
  if (!S.token) {
    state("error");
    return status("open the URL that `sladd review` printed: it ends with #token=…", true);
  }
  $("filters").addEventListener("submit", applyFilter);
  $("f-empty").addEventListener("change", () => {
    for (const id of ["f-class", "f-min", "f-max"]) $(id).disabled = $("f-empty").checked;
  });
  $("prev").addEventListener("click", () => go(S.pos - 1));
  $("next").addEventListener("click", () => go(S.pos + 1));
  $("save").addEventListener("click", save);
  $("original").addEventListener("click", toggleOriginal);
  $("help-button").addEventListener("click", () => { $("help").hidden = !$("help").hidden; });
  const svg = $("overlay");
  svg.addEventListener("pointerdown", onDown);
  svg.addEventListener("pointermove", onMove);
  svg.addEventListener("pointerup", onUp);
  svg.addEventListener("pointercancel", () => { S.drag = null; drawOverlay(); });
  document.addEventListener("keydown", onKey);
  window.addEventListener("resize", () => { if (S.key) drawOverlay(); });
  window.addEventListener("beforeunload", (ev) => { if (pendingCount()) ev.preventDefault(); });
  try {
    const info = await (await api("/api/info")).json();
    for (const c of info.classes) {
      const o = document.createElement("option");
      o.value = c; o.textContent = c;
      $("f-class").append(o);
    }
    document.title = `sladd review — ${info.output}`;
    await applyFilter();
    if (info.skipped) status(`${info.skipped} image(s) with names that are not UTF-8 are not listed`);
  } catch (e) { state("error"); status(e.message, true); }
}

start();
