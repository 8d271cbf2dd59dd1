// The script of `charrnn export`'s page (inlined into page.html by page.py).
// Everything it shows goes in as text (textContent, input values), never as HTML: the
// vocabulary, the card, the generated text and the URL fragment are data, not markup.
"use strict";

const DATA = JSON.parse(document.getElementById("data").textContent);
const $ = (id) => document.getElementById(id);
const GATES = { lstm: 4, gru: 3, rnn: 1 };

// ---- unpacking -------------------------------------------------------------------------------
function base64Bytes(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

async function gunzip(bytes) {
  // The browser's own inflater: no decompressor in the page, no request (a Blob is local).
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function halfsToFloats(bytes) {
  // IEEE fp16 -> fp32 by a 65,536-entry table: exact, and quicker than bit fiddling per value.
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
    table[h] = exp === 0 ? sign * frac * 2 ** -24
      : exp === 31 ? (frac ? NaN : sign * Infinity)
        : sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 1);
  const out = new Float32Array(halves.length);
  for (let i = 0; i < halves.length; i++) out[i] = table[halves[i]];
  return out;
}

// ---- the kernel: y = W x + b ----------------------------------------------------------------
// Both paths work on one Float32Array "heap" with the same layout; offsets are in floats.
function jsGemv(heap) {
  return (y, w, x, b, rows, stride) => {
    for (let r = 0; r < rows; r++) {
      const row = w + r * stride;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      for (let j = 0; j < stride; j += 4) {
        a0 += heap[row + j] * heap[x + j];
        a1 += heap[row + j + 1] * heap[x + j + 1];
        a2 += heap[row + j + 2] * heap[x + j + 2];
        a3 += heap[row + j + 3] * heap[x + j + 3];
      }
      heap[y + r] = heap[b + r] + ((a0 + a1) + (a2 + a3));
    }
  };
}

async function makeKernel(floats, want) {
  // WebAssembly SIMD where the browser has it (and the page's policy lets it compile),
  // else the same loop in plain JavaScript.
  const bytes = base64Bytes(DATA.wasm);
  if (want !== "js" && typeof WebAssembly === "object" && WebAssembly.validate(bytes)) {
    try {
      const { instance } = await WebAssembly.instantiate(bytes, {});
      const memory = instance.exports.memory;
      const base = Math.ceil(instance.exports.__heap_base.value / 16) * 16;
      const need = base + floats * 4 - memory.buffer.byteLength;
      if (need > 0) memory.grow(Math.ceil(need / 65536));
      const heap = new Float32Array(memory.buffer, base, floats);
      const gemv = instance.exports.gemv;
      return { heap, name: "WebAssembly SIMD",
               gemv: (y, w, x, b, rows, stride) => gemv(base + 4 * y, base + 4 * w, base + 4 * x, base + 4 * b, rows, stride) };
    } catch (error) {
      console.warn("WebAssembly kernel unavailable, using JavaScript:", String(error));
    }
  }
  const heap = new Float32Array(floats);
  return { heap, name: "JavaScript", gemv: jsGemv(heap) };
}

// ---- the network ----------------------------------------------------------------------------
class Net {
  // One stream of the model: the state of every layer, and a step that takes a character id
  // and returns the logits of the next. Layer 0's input projection is a table per character.
  static async load(want) {
    const floats = halfsToFloats(await gunzip(base64Bytes(DATA.weights)));
    const params = {};
    let at = 0;
    for (const [name, shape] of DATA.manifest) {
      const size = shape.reduce((a, b) => a * b, 1);
      params[name] = floats.subarray(at, at + size);
      at += size;
    }
    return new Net(params, want).build();
  }

  constructor(params, want) {
    this.params = params;
    this.want = want;
    this.cell = DATA.cell;
    this.L = DATA.layers;
    this.H = DATA.hidden;
    this.V = DATA.vocab_size;
    this.S = Math.ceil(this.H / 4) * 4;  // row stride: the kernel reads 4 floats at a time
    this.G = GATES[this.cell] * this.H;
  }

  async build() {
    const { L, H, V, S, G, params } = this;
    let top = 0;
    const plan = (n) => { const at = top; top += Math.ceil(n / 4) * 4; return at; };
    const o = { embed: plan(V * S), table: plan(V * G), wih: [], whh: [], bih: [], bhh: [] };
    for (let l = 0; l < L; l++) {
      o.wih.push(l === 0 ? plan(G * S) : plan(G * S));
      o.whh.push(plan(G * S));
      o.bih.push(plan(G));
      o.bhh.push(plan(G));
    }
    o.headW = plan(V * S); o.headB = plan(V); o.zero = plan(G);
    o.state = plan(2 * L * S);  // h of every layer, then c: one block to save and restore
    o.gi = plan(G); o.gh = plan(G); o.logits = plan(V);
    const kernel = await makeKernel(top, this.want);
    const heap = kernel.heap;
    const put = (at, src, rows, cols) => {  // rows x cols into rows x S, zero-padded
      for (let r = 0; r < rows; r++) heap.set(src.subarray(r * cols, (r + 1) * cols), at + r * S);
    };
    put(o.embed, params.embed, V, H);
    for (let l = 0; l < L; l++) {
      put(o.wih[l], params[`weight_ih_l${l}`], G, H);
      put(o.whh[l], params[`weight_hh_l${l}`], G, H);
      heap.set(params[`bias_ih_l${l}`], o.bih[l]);
      heap.set(params[`bias_hh_l${l}`], o.bhh[l]);
    }
    put(o.headW, params.head_weight, V, H);
    heap.set(params.head_bias, o.headB);
    for (let v = 0; v < V; v++) kernel.gemv(o.table + v * G, o.wih[0], o.embed + v * S, o.bih[0], G, S);
    this.o = o; this.heap = heap; this.gemv = kernel.gemv; this.engine = kernel.name;
    this.logits = heap.subarray(o.logits, o.logits + V);
    this.gi = heap.subarray(o.gi, o.gi + G);
    this.gh = heap.subarray(o.gh, o.gh + G);
    this.hs = Array.from({ length: L }, (_, l) => heap.subarray(o.state + l * S, o.state + l * S + H));
    this.cs = Array.from({ length: L }, (_, l) => heap.subarray(o.state + (L + l) * S, o.state + (L + l) * S + H));
    delete this.params;
    return this;
  }

  reset() { this.heap.fill(0, this.o.state, this.o.state + 2 * this.L * this.S); }
  saveState() { return this.heap.slice(this.o.state, this.o.state + 2 * this.L * this.S); }
  loadState(saved) { this.heap.set(saved, this.o.state); }

  step(id) {
    const { L, H, S, G, o, heap, gemv } = this;
    for (let l = 0; l < L; l++) {
      let gi = this.gi;
      if (l === 0) gi = heap.subarray(o.table + id * G, o.table + (id + 1) * G);
      else gemv(o.gi, o.wih[l], o.state + (l - 1) * S, o.bih[l], G, S);
      gemv(o.gh, o.whh[l], o.state + l * S, o.bhh[l], G, S);
      const gh = this.gh, h = this.hs[l];
      if (this.cell === "lstm") {
        const c = this.cs[l];
        for (let k = 0; k < H; k++) {
          const i = sigmoid(gi[k] + gh[k]), f = sigmoid(gi[H + k] + gh[H + k]);
          const g = Math.tanh(gi[2 * H + k] + gh[2 * H + k]), out = sigmoid(gi[3 * H + k] + gh[3 * H + k]);
          c[k] = f * c[k] + i * g;
          h[k] = out * Math.tanh(c[k]);
        }
      } else if (this.cell === "gru") {
        for (let k = 0; k < H; k++) {
          const r = sigmoid(gi[k] + gh[k]), z = sigmoid(gi[H + k] + gh[H + k]);
          const n = Math.tanh(gi[2 * H + k] + r * gh[2 * H + k]);
          h[k] = (1 - z) * n + z * h[k];
        }
      } else {
        for (let k = 0; k < H; k++) h[k] = Math.tanh(gi[k] + gh[k]);
      }
    }
    gemv(o.logits, o.headW, o.state + (L - 1) * S, o.headB, this.V, S);
    return this.logits;
  }

  // The state after reading `ids` from zero, with the last id still to be fed: what the
  // sampler does (the prime runs through the model, its last character is the first input).
  prime(ids) {
    this.reset();
    for (let t = 0; t + 1 < ids.length; t++) this.step(ids[t]);
    return ids[ids.length - 1];
  }
}

function sigmoid(x) { return 1 / (1 + Math.exp(-x)); }

// ---- sampling -------------------------------------------------------------------------------
function makeRandom(seed) {
  // sfc32 from a seed's 128 bits (splitmix32 of the seed); without a seed, from the system.
  const words = new Uint32Array(4);
  if (seed === null) crypto.getRandomValues(words);
  else {
    let s = (Number(BigInt.asUintN(32, BigInt(seed))) ^ 0x9e3779b9) >>> 0;
    const hi = Number(BigInt.asUintN(32, BigInt(seed) >> 32n)) >>> 0;
    for (let i = 0; i < 4; i++) {
      s = (s + 0x9e3779b9 + hi * (i + 1)) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b); z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      words[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }
  let [a, b, c, d] = words;
  return () => {
    a >>>= 0; b >>>= 0; c >>>= 0; d >>>= 0;
    const t = (a + b | 0) + d | 0;
    d = d + 1 | 0; a = b ^ b >>> 9; b = c + (c << 3) | 0; c = c << 21 | c >>> 11; c = c + t | 0;
    return (t >>> 0) / 4294967296;
  };
}

function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

// Probabilities after temperature, top-k and top-p, as charrnn's next_distribution makes them.
function distribution(logits, options) {
  const n = logits.length, t = options.temperature;
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[i]);
  const z = new Float64Array(n);
  for (let i = 0; i < n; i++) z[i] = t === 1 ? logits[i] - max : (logits[i] - max) / t;
  if (options.topK && options.topK < n) {
    const kth = Array.from(z).sort((a, b) => b - a)[options.topK - 1];
    for (let i = 0; i < n; i++) if (z[i] < kth) z[i] = -Infinity;
  }
  let sum = 0;
  const p = new Float64Array(n);
  for (let i = 0; i < n; i++) { p[i] = Math.exp(z[i]); sum += p[i]; }
  for (let i = 0; i < n; i++) p[i] /= sum;
  if (options.topP && options.topP < 1) {
    const order = Array.from(p.keys()).sort((a, b) => p[b] - p[a]);
    let before = 0, kept = 0;
    for (const i of order) {
      const mass = p[i];
      if (before >= options.topP) p[i] = 0; else kept += mass;
      before += mass;
    }
    for (let i = 0; i < n; i++) p[i] /= kept;
  }
  return p;
}

function choose(logits, options, random) {
  if (options.temperature === 0) return argmax(logits);
  const p = distribution(logits, options);
  let u = random(), last = 0;
  for (let i = 0; i < p.length; i++) {
    if (p[i] > 0) last = i;
    u -= p[i];
    if (u < 0 && p[i] > 0) return i;
  }
  return last;
}

// ---- record hashes: blake2b with an 8-byte digest, as charrnn's record_hash ------------------
const MASK = (1n << 64n) - 1n;
const IV = [0x6a09e667f3bcc908n, 0xbb67ae8584caa73bn, 0x3c6ef372fe94f82bn, 0xa54ff53a5f1d36f1n,
  0x510e527fade682d1n, 0x9b05688c2b3e6c1fn, 0x1f83d9abfb41bd6bn, 0x5be0cd19137e2179n];
const SIGMA = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
  [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4], [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
  [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13], [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
  [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11], [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
  [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5], [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0]];

function rotr(x, n) { return ((x >> n) | (x << (64n - n))) & MASK; }

function compress(h, block, counter, last) {
  const v = h.concat(IV), m = [];
  for (let i = 0; i < 16; i++) {
    let word = 0n;
    for (let k = 7; k >= 0; k--) word = (word << 8n) | BigInt(block[i * 8 + k]);
    m.push(word);
  }
  v[12] ^= BigInt(counter);
  if (last) v[14] ^= MASK;
  const g = (a, b, c, d, x, y) => {
    v[a] = (v[a] + v[b] + x) & MASK; v[d] = rotr(v[d] ^ v[a], 32n);
    v[c] = (v[c] + v[d]) & MASK; v[b] = rotr(v[b] ^ v[c], 24n);
    v[a] = (v[a] + v[b] + y) & MASK; v[d] = rotr(v[d] ^ v[a], 16n);
    v[c] = (v[c] + v[d]) & MASK; v[b] = rotr(v[b] ^ v[c], 63n);
  };
  for (let r = 0; r < 12; r++) {
    const s = SIGMA[r % 10];
    g(0, 4, 8, 12, m[s[0]], m[s[1]]); g(1, 5, 9, 13, m[s[2]], m[s[3]]);
    g(2, 6, 10, 14, m[s[4]], m[s[5]]); g(3, 7, 11, 15, m[s[6]], m[s[7]]);
    g(0, 5, 10, 15, m[s[8]], m[s[9]]); g(1, 6, 11, 12, m[s[10]], m[s[11]]);
    g(2, 7, 8, 13, m[s[12]], m[s[13]]); g(3, 4, 9, 14, m[s[14]], m[s[15]]);
  }
  for (let i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

function recordHash(text) {
  // int.from_bytes(blake2b(utf8, digest_size=8), "little", signed=True)
  const data = new TextEncoder().encode(text);
  const h = IV.slice();
  h[0] ^= 0x01010000n ^ 8n;
  let at = 0;
  while (data.length - at > 128) {
    compress(h, data.subarray(at, at + 128), at + 128, false);
    at += 128;
  }
  const block = new Uint8Array(128);
  block.set(data.subarray(at));
  compress(h, block, data.length, true);
  return BigInt.asIntN(64, h[0]);
}

let KNOWN = null;  // BigInt64Array of the training records' hashes, sorted (as charrnn stores them)
function isKnownRecord(text) {
  if (!KNOWN) return false;
  const x = recordHash(text);
  let lo = 0, hi = KNOWN.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (KNOWN[mid] === x) return true;
    if (KNOWN[mid] < x) lo = mid + 1; else hi = mid - 1;
  }
  return false;
}

// ---- the page -------------------------------------------------------------------------------
const INDEX = new Map(DATA.vocab.map((c, i) => [c, i]));
const IS_RECORDS = DATA.marker !== null;
let net = null;
let running = null;  // the token of the generation in progress, or null

function settings() {
  const number = (id, fallback) => { const v = $(id).value.trim(); return v === "" ? fallback : Number(v); };
  const temperature = number("temp", 0.8);
  const topK = number("topk", null), topP = number("topp", null);
  const length = Math.floor(number("length", 500));
  const seed = number("seed", null);
  const problems = [];
  if (!(temperature >= 0)) problems.push("temperature must be 0 or more");
  if (topK !== null && !(topK >= 1)) problems.push("top-k must be 1 or more");
  if (topP !== null && !(topP > 0 && topP <= 1)) problems.push("top-p must be in (0, 1]");
  if (!(length >= 1)) problems.push("length must be 1 or more");
  if (seed !== null && !Number.isInteger(seed)) problems.push("the seed must be a whole number");
  return { temperature, topK: topK && Math.floor(topK), topP, length, seed, count: Math.max(1, Math.floor(number("count", 10))),
           problems };
}

function unknownChars(text) { return [...new Set(Array.from(text).filter((c) => !INDEX.has(c)))]; }
function shown(c) { return JSON.stringify(c); }

const yieldToPage = () => new Promise((resolve) => { const ch = new MessageChannel(); ch.port1.onmessage = resolve; ch.port2.postMessage(0); });

function setRunning(on) {
  for (const id of ["write", "draw", "suggest"]) $(id).disabled = on;
  for (const id of ["stop", "stop-records"]) $(id).disabled = !on;
}

function finished(status, text) {
  $(status).textContent = text;
  running = null;
  setRunning(false);
  document.body.dataset.done = String(Number(document.body.dataset.done || 0) + 1);
}

async function write() {
  if (running) return;
  const s = settings(), prime = $("prime").value;
  $("output-prime").textContent = ""; $("output-text").textContent = "";
  if (s.problems.length) return finished("write-status", s.problems.join("; "));
  const unknown = unknownChars(prime);
  if (unknown.length) {
    return finished("write-status", `The prime has characters the model never saw: ${unknown.map(shown).join(" ")}`);
  }
  const token = running = {};
  setRunning(true);
  const ids = Array.from(prime, (c) => INDEX.get(c));
  // As `charrnn sample`: a record starts from START; a stream with no prime from a newline, not shown.
  let current = net.prime(IS_RECORDS ? [DATA.marker, ...ids] : ids.length ? ids : [INDEX.has("\n") ? INDEX.get("\n") : 0]);
  $("output-prime").textContent = prime;
  const random = makeRandom(s.seed), out = $("output-text"), began = performance.now();
  let made = 0, pending = "", slice = performance.now();
  while (made < s.length && running === token) {
    current = choose(net.step(current), s, random);
    made++;
    pending += current === DATA.marker ? "\n" : DATA.vocab[current];  // a record's END shows as a line break
    if (performance.now() - slice > 30) {
      out.textContent += pending; pending = "";
      await yieldToPage();
      slice = performance.now();
    }
  }
  out.textContent += pending;
  const seconds = (performance.now() - began) / 1000;
  finished("write-status", `${made.toLocaleString()} characters in ${seconds.toFixed(2)} s` + (running === token ? "" : " (stopped)"));
}

async function drawRecords() {
  if (running) return;
  const s = settings(), prime = $("prime").value, list = $("records");
  list.textContent = "";
  if (s.problems.length) return finished("records-status", s.problems.join("; "));
  const unknown = unknownChars(prime);
  if (unknown.length) {
    return finished("records-status", `The prime has characters the model never saw: ${unknown.map(shown).join(" ")}`);
  }
  const token = running = {};
  setRunning(true);
  const first = net.prime([DATA.marker, ...Array.from(prime, (c) => INDEX.get(c))]);
  const start = net.saveState(), random = makeRandom(s.seed), novel = $("novel").checked;
  let kept = 0, drawn = 0, known = 0, empty = 0, slice = performance.now();
  while (kept < s.count && drawn < 100 * s.count && running === token) {
    net.loadState(start);
    let current = first, text = "";
    for (let t = 0; t <= s.length; t++) {
      current = choose(net.step(current), s, random);
      if (current === DATA.marker || t === s.length) break;
      text += DATA.vocab[current];
    }
    drawn++;
    const record = prime + text;
    if (!record) empty++;
    else if (novel && isKnownRecord(record)) known++;
    else {
      const item = document.createElement("li");
      item.textContent = record;
      list.appendChild(item);
      kept++;
    }
    if (performance.now() - slice > 30) { await yieldToPage(); slice = performance.now(); }
  }
  const dropped = known + empty;
  finished("records-status", `${kept} of ${drawn} drawn` +
    (dropped ? `; dropped ${known} already in the training data, ${empty} empty` : "") +
    (kept < s.count && running === token ? `; gave up after ${drawn} draws` : ""));
}

// ---- co-writing -----------------------------------------------------------------------------
const cowrite = { items: [], on: 0, at: 0, cache: { text: null, state: null, current: 0 } };

// The state over the text before the cursor: unknown characters are skipped (and listed), and
// the state of the longest prefix already read is reused, so typing on costs only the new text.
function stateBefore(text) {
  const context = IS_RECORDS ? text.slice(text.lastIndexOf(DATA.separator || "\n") + 1) : text;
  const known = Array.from(context).filter((c) => INDEX.has(c)).join("");
  const skipped = unknownChars(context);
  let ids = Array.from(known, (c) => INDEX.get(c));
  if (IS_RECORDS) ids = [DATA.marker, ...ids];
  else if (!ids.length) ids = [INDEX.has("\n") ? INDEX.get("\n") : 0];
  const key = ids.join(",");
  const cache = cowrite.cache;
  if (cache.text !== null && key.startsWith(cache.text) && cache.text.length > 0 &&
      (key.length === cache.text.length || key[cache.text.length] === ",")) {
    net.loadState(cache.state);
    let current = cache.current;
    const done = cache.text.split(",").length;
    for (let t = done; t < ids.length; t++) { net.step(current); current = ids[t]; }
    Object.assign(cache, { text: key, state: net.saveState(), current });
    return { current, skipped };
  }
  const current = net.prime(ids);
  Object.assign(cache, { text: key, state: net.saveState(), current });
  return { current, skipped };
}

function suggest() {
  if (running) return;
  const area = $("cowrite"), at = area.selectionStart;
  const { current, skipped } = stateBefore(area.value.slice(0, at));
  const s = settings(), start = net.saveState(), random = makeRandom(s.seed);
  const items = [];
  const width = Math.min(s.length, 60);
  for (let k = 0; k < 3; k++) {
    net.loadState(start);
    const options = k === 0 ? { temperature: 0 } : { ...s, temperature: s.temperature || 0.8 };
    let id = current, text = "";
    for (let t = 0; t < width; t++) {
      id = choose(net.step(id), options, random);
      if (id === DATA.marker) break;
      text += DATA.vocab[id];
      if (text.length > 8 && /[\n.!?]$/.test(text)) break;  // a line or a sentence at a time
    }
    if (text && !items.includes(text)) items.push(text);
  }
  Object.assign(cowrite, { items, on: 0, at });
  $("cowrite-status").textContent = skipped.length
    ? `Skipped for the model (never seen in training): ${skipped.map(shown).join(" ")}` : "";
  $("cowrite-status").className = skipped.length ? "status warn" : "status";
  showSuggestions();
}

function showSuggestions() {
  const list = $("suggestions");
  list.textContent = "";
  cowrite.items.forEach((text, i) => {
    const item = document.createElement("li"), button = document.createElement("button");
    button.type = "button";
    button.textContent = text;
    button.className = i === cowrite.on ? "on" : "";
    button.addEventListener("mousedown", (e) => e.preventDefault());  // keep the caret in the text
    button.addEventListener("click", () => accept(i));
    item.appendChild(button);
    list.appendChild(item);
  });
}

function accept(i) {
  const area = $("cowrite"), text = cowrite.items[i];
  if (text === undefined) return;
  area.focus();
  area.setSelectionRange(cowrite.at, cowrite.at);
  // setRangeText keeps the text area's own undo history apart from a full value rewrite.
  area.setRangeText(text, cowrite.at, cowrite.at, "end");
  dismiss();
}

function dismiss() { cowrite.items = []; showSuggestions(); }

function onCowriteKey(e) {
  const open = cowrite.items.length > 0;
  if (e.key === "Tab" && !e.shiftKey) {
    e.preventDefault();
    if (open) accept(cowrite.on); else suggest();
  } else if (open && (e.key === "ArrowDown" || e.key === "ArrowUp")) {
    e.preventDefault();
    cowrite.on = (cowrite.on + (e.key === "ArrowDown" ? 1 : cowrite.items.length - 1)) % cowrite.items.length;
    showSuggestions();
  } else if (open && e.key === "Enter") {
    e.preventDefault();
    accept(cowrite.on);
  } else if (open && e.key === "Escape") {
    e.preventDefault();
    dismiss();
  } else if (open && !["Shift", "Control", "Alt", "Meta"].includes(e.key)) {
    dismiss();
  }
}

// ---- modes, the URL fragment, the card ------------------------------------------------------
function setMode(mode) {
  if (mode === "records" && !IS_RECORDS) mode = "write";
  for (const button of document.querySelectorAll("#modes button")) {
    button.setAttribute("aria-pressed", String(button.dataset.mode === mode));
  }
  $("panel-write").hidden = mode !== "write";
  $("panel-records").hidden = mode !== "records";
  $("panel-cowrite").hidden = mode !== "cowrite";
  $("count-box").hidden = mode !== "records";
  $("prime-label").textContent = mode === "records" ? "Starts with" : "Prime";
  document.body.dataset.mode = mode;
}

function fragment() {
  // "#prime=ROMEO:&temp=0&run": split by hand, so that "+" stays a plus (URLSearchParams reads a space).
  const found = new Map();
  for (const part of location.hash.replace(/^#/, "").split("&")) {
    if (!part) continue;
    const eq = part.indexOf("=");
    const key = eq < 0 ? part : part.slice(0, eq);
    let value = eq < 0 ? "" : part.slice(eq + 1);
    try { value = decodeURIComponent(value); } catch { /* a stray % stays as typed */ }
    found.set(key, value);
  }
  return found;
}

function applyFragment() {
  const f = fragment();
  const fields = { prime: "prime", temp: "temp", topk: "topk", topp: "topp", length: "length", seed: "seed", n: "count" };
  for (const [key, id] of Object.entries(fields)) if (f.has(key)) $(id).value = f.get(key);  // a value is text, never markup
  if (f.has("novel")) $("novel").checked = f.get("novel") !== "0";
  if (f.has("mode")) setMode(f.get("mode"));
  if (f.has("text")) $("cowrite").value = f.get("text");
  if (f.has("bench")) return bench(Math.max(100, Number(f.get("bench")) || 5000));
  if (f.has("run")) {
    const mode = document.body.dataset.mode;
    if (mode === "records") drawRecords(); else if (mode === "write") write();
  }
}

async function bench(chars) {
  // One stream stepping and drawing (temperature 1) as fast as it can: chars/s for bench/export.py.
  // Timed in slices between which the page answers (a driver polling it must not time out);
  // only the slices count.
  net.prime([INDEX.has("\n") ? INDEX.get("\n") : 0]);
  const random = makeRandom(1), options = { temperature: 1 };
  let current = 0, done = 0, busy = 0;
  for (let t = 0; t < 200; t++) current = choose(net.step(current), options, random);  // warm up the JIT
  while (done < chars) {
    const began = performance.now(), slice = Math.min(500, chars - done);
    for (let t = 0; t < slice; t++) current = choose(net.step(current), options, random);
    busy += performance.now() - began;
    done += slice;
    await yieldToPage();
  }
  const rate = chars / (busy / 1000);
  $("bench-result").textContent = `${Math.round(rate)} chars/s (${net.engine}, ${chars} characters)`;
  document.body.dataset.bench = String(Math.round(rate));
}

function fillCard() {
  const card = $("card");
  for (const [label, value] of DATA.card) {
    const row = card.insertRow(), th = document.createElement("th");
    th.textContent = label;
    row.appendChild(th);
    row.insertCell().textContent = value;
  }
}

// The hook the tests and the bench read: the page's own numbers, nothing the UI lacks.
window.charrnnPage = {
  distributions(prime) {
    // Next-character probabilities after each prefix of the prime (from START for a record model).
    const ids = Array.from(prime, (c) => INDEX.get(c));
    net.reset();
    const rows = [];
    if (IS_RECORDS) net.step(DATA.marker);
    for (const id of ids) rows.push(Array.from(distribution(net.step(id), { temperature: 1 })));
    return rows;
  },
  recordHash: (text) => String(recordHash(text)),
  engine: () => net.engine,
};

async function main() {
  document.title = DATA.title;
  $("title").textContent = DATA.title;
  fillCard();
  if (!IS_RECORDS) $("modes").querySelector("[data-mode=records]").hidden = true;
  else $("modes").querySelector("[data-mode=write]").hidden = true;
  setMode(IS_RECORDS ? "records" : "write");
  if (DATA.record_hashes) {
    const bytes = await gunzip(base64Bytes(DATA.record_hashes));
    KNOWN = new BigInt64Array(bytes.buffer, 0, bytes.byteLength / 8);
  } else {
    $("novel").checked = false;
    $("novel").disabled = true;
  }
  net = await Net.load(fragment().get("engine"));
  $("engine-note").textContent = `Runs on ${net.engine} in this browser.`;
  document.body.dataset.engine = net.engine;
  for (const button of document.querySelectorAll("#modes button")) button.addEventListener("click", () => setMode(button.dataset.mode));
  $("write").addEventListener("click", write);
  $("draw").addEventListener("click", drawRecords);
  $("stop").addEventListener("click", () => { running = null; });
  $("stop-records").addEventListener("click", () => { running = null; });
  $("suggest").addEventListener("click", suggest);
  $("cowrite").addEventListener("keydown", onCowriteKey);
  $("prime").addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || e.shiftKey) return;  // Shift+Enter types a line break into the prime
    e.preventDefault();
    if (document.body.dataset.mode === "records") drawRecords(); else if (document.body.dataset.mode === "write") write();
  });
  window.addEventListener("hashchange", applyFragment);
  document.body.dataset.ready = "1";
  applyFragment();
}

main().catch((error) => {
  $("engine-note").textContent = `The model could not be loaded in this browser: ${error}`;
  console.error(error);
});
