// src/node/gpu.ts
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

// src/errors.ts
var KvCompactError = class extends Error {
  name = "KvCompactError";
};
var NoAdapterError = class extends KvCompactError {
  name = "NoAdapterError";
};
var DeviceLostError = class extends KvCompactError {
  constructor(reason, message) {
    super(`GPU device lost (${reason}): ${message}. Create a new context; GPU buffers of the old one are gone.`);
    this.reason = reason;
  }
  reason;
  name = "DeviceLostError";
};
var LimitExceededError = class extends KvCompactError {
  constructor(limit, value, maximum, hint = "") {
    super(`${limit} exceeded: ${value} > ${maximum}${hint ? `. ${hint}` : ""}`);
    this.limit = limit;
    this.value = value;
    this.maximum = maximum;
  }
  limit;
  value;
  maximum;
  name = "LimitExceededError";
};
var InvalidArgumentError = class extends KvCompactError {
  constructor(field, message) {
    super(`${field}: ${message}`);
    this.field = field;
  }
  field;
  name = "InvalidArgumentError";
};
var GpuValidationError = class extends KvCompactError {
  name = "GpuValidationError";
};

// src/gpu/adapter-report.ts
function describeAdapter(adapter) {
  const info = adapter.info;
  const legacy = adapter.isFallbackAdapter;
  const vendor = info.vendor ?? "";
  const architecture = info.architecture ?? "";
  return {
    vendor,
    architecture,
    description: info.description ?? "",
    isFallbackAdapter: info.isFallbackAdapter ?? legacy ?? (vendor === "google" && architecture === "swiftshader")
  };
}
var NEGOTIATED_LIMITS = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupsPerDimension",
  "maxUniformBufferBindingSize"
];
var WANTED_FEATURES = ["timestamp-query", "subgroups", "shader-f16"];
function deviceDescriptorFor(adapter, label, caps = {}) {
  const requiredLimits = {};
  for (const name of NEGOTIATED_LIMITS) {
    const value = adapter.limits[name];
    const cap = caps[name];
    if (typeof value === "number") requiredLimits[name] = cap === void 0 ? value : Math.min(value, cap);
  }
  const requiredFeatures = WANTED_FEATURES.filter((feature) => adapter.features.has(feature));
  return { label, requiredLimits, requiredFeatures };
}

// src/gpu/buffer-pool.ts
var MIN_CLASS_BYTES = 256;
function sizeClass(bytes) {
  let size = MIN_CLASS_BYTES;
  while (size < bytes) size *= 2;
  return size;
}
function checkBufferSize(limits, bytes, storage) {
  if (!Number.isInteger(bytes) || bytes <= 0) {
    throw new InvalidArgumentError("size", `a buffer needs a positive integer byte size; got ${bytes}`);
  }
  if (bytes > limits.maxBufferSize) {
    throw new LimitExceededError("maxBufferSize", bytes, limits.maxBufferSize);
  }
  if (storage && bytes > limits.maxStorageBufferBindingSize) {
    throw new LimitExceededError(
      "maxStorageBufferBindingSize",
      bytes,
      limits.maxStorageBufferBindingSize,
      "split the data or use a smaller pool"
    );
  }
}
var BufferPool = class {
  constructor(gpu2) {
    this.gpu = gpu2;
  }
  gpu;
  free = /* @__PURE__ */ new Map();
  pending = [];
  owned = /* @__PURE__ */ new Set();
  /** A buffer of at least `bytes` bytes with exactly `usage`. */
  acquire(bytes, usage, label = "pooled") {
    const storage = (usage & GPUBufferUsage.STORAGE) !== 0;
    checkBufferSize(this.gpu.limits, bytes, storage);
    const size = sizeClass(bytes);
    const key = `${usage}:${size}`;
    const reused = this.free.get(key)?.pop();
    if (reused) {
      reused.label = label;
      return reused;
    }
    const maximum = storage ? this.gpu.limits.maxStorageBufferBindingSize : this.gpu.limits.maxBufferSize;
    const buffer = this.gpu.device.createBuffer({ label, size: Math.min(size, maximum), usage });
    this.owned.add(buffer);
    return buffer;
  }
  /** Returns a buffer; it becomes reusable after the latest submission completes. */
  release(buffer) {
    if (!this.owned.has(buffer)) {
      throw new InvalidArgumentError("buffer", `"${buffer.label}" was not acquired from this pool`);
    }
    this.pending.push({ buffer, serial: this.gpu.lastSubmitted });
    this.recycle(this.gpu.lastCompleted);
  }
  /** Moves released buffers whose last submission has completed to the free lists. */
  recycle(completedSerial) {
    for (let i = this.pending.length - 1; i >= 0; i--) {
      const entry = this.pending[i];
      if (!entry || entry.serial > completedSerial) continue;
      this.pending.splice(i, 1);
      const key = `${entry.buffer.usage}:${entry.buffer.size}`;
      const list = this.free.get(key) ?? [];
      list.push(entry.buffer);
      this.free.set(key, list);
    }
  }
  /** Buffers waiting for their submission to complete. */
  get pendingCount() {
    return this.pending.length;
  }
  /** Buffers ready for reuse. */
  get freeCount() {
    let count = 0;
    for (const list of this.free.values()) count += list.length;
    return count;
  }
  /** Destroys every buffer this pool created. */
  destroy() {
    for (const buffer of this.owned) buffer.destroy();
    this.owned.clear();
    this.free.clear();
    this.pending.length = 0;
  }
};

// src/gpu/pipeline-cache.ts
var PipelineCache = class {
  constructor(device) {
    this.device = device;
  }
  device;
  pipelines = /* @__PURE__ */ new Map();
  /** The pipeline for `key`, created from `describe()` on first use. */
  get(key, describe) {
    const cached = this.pipelines.get(key);
    if (cached) return cached;
    const { label, code, entryPoint } = describe();
    const module = this.device.createShaderModule({ label: `${label}.wgsl`, code });
    const pipeline = this.device.createComputePipeline({
      label,
      layout: "auto",
      compute: entryPoint ? { module, entryPoint } : { module }
    });
    this.pipelines.set(key, pipeline);
    return pipeline;
  }
  /** How many pipelines are cached. */
  get size() {
    return this.pipelines.size;
  }
  /** Forgets every pipeline (they have no destroy(); the device frees them). */
  clear() {
    this.pipelines.clear();
  }
};

// src/gpu/context.ts
var GpuContext = class _GpuContext {
  device;
  adapter;
  ownsDevice;
  features;
  limits;
  pipelines;
  buffers;
  /**
   * The largest workgroup count per dispatch dimension the kernels use: the device limit, lowered only by tests
   * so that folding is exercised at small sizes.
   */
  maxWorkgroupsPerDimension;
  /** Resolves with the loss error if the device is lost while we did not destroy it; null after destroy(). */
  lost;
  keepAlive;
  destroyed = false;
  lostError = null;
  submitted = 0;
  completed = 0;
  /** Per-run buffers (uniforms) recorded since the last submit; destroyed once that submit completes. */
  transient = [];
  constructor(init) {
    this.device = init.device;
    this.adapter = init.adapter;
    this.ownsDevice = init.ownsDevice;
    this.keepAlive = init.keepAlive;
    this.features = new Set(init.device.features);
    this.limits = init.device.limits;
    this.maxWorkgroupsPerDimension = init.device.limits.maxComputeWorkgroupsPerDimension;
    this.pipelines = new PipelineCache(init.device);
    this.buffers = new BufferPool(this);
    this.lost = init.device.lost.then((info) => {
      if (this.destroyed) return null;
      this.lostError = new DeviceLostError(String(info.reason), info.message || "no message");
      return this.lostError;
    });
  }
  /**
   * Requests an adapter and device from a `GPU` object (`navigator.gpu` in a browser, `create([])` in Node),
   * asking for the adapter's maximum limits and the optional features the kernels use.
   */
  static async fromGpu(gpu2, options = {}) {
    const adapter = await gpu2.requestAdapter({
      powerPreference: options.powerPreference ?? "high-performance",
      forceFallbackAdapter: options.forceFallbackAdapter ?? false
    });
    if (!adapter) {
      throw new NoAdapterError(
        "no WebGPU adapter. In Chrome enable WebGPU (chrome://flags/#enable-unsafe-webgpu on Linux); in Node install a Vulkan driver, or the software adapter: `apt-get install chromium libvulkan1` and VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json (`npm run setup` does this)"
      );
    }
    const device = await adapter.requestDevice(deviceDescriptorFor(adapter, "kvcompact", options.limits));
    return new _GpuContext({
      device,
      adapter: describeAdapter(adapter),
      ownsDevice: true,
      keepAlive: options.keepAlive ?? gpu2
    });
  }
  /** Uses `navigator.gpu` (browsers, Deno). Throws NoAdapterError with instructions when WebGPU is missing. */
  static async fromNavigator(options = {}) {
    const gpu2 = globalThis.navigator?.gpu;
    if (!gpu2) {
      throw new NoAdapterError(
        "this browser has no WebGPU (navigator.gpu is undefined): use Chrome or Edge 113+, or Firefox 141+ on Windows; on Linux start Chrome with --enable-unsafe-webgpu; pages must be served over https or localhost"
      );
    }
    return _GpuContext.fromGpu(gpu2, options);
  }
  /** Adopts a device the caller already has. `destroy()` will release our buffers and never the device. */
  static adopt(device, adapter) {
    const report = adapter ? describeAdapter(adapter) : { vendor: "unknown", architecture: "unknown", description: "adopted device", isFallbackAdapter: false };
    return new _GpuContext({ device, adapter: report, ownsDevice: false });
  }
  /** True when the device has the optional feature. */
  has(feature) {
    return this.features.has(feature);
  }
  /** Throws DeviceLostError if the device was lost, or an error if this context was destroyed. */
  assertUsable() {
    if (this.lostError) throw this.lostError;
    if (this.destroyed) throw new KvCompactError("this GpuContext was destroyed; create a new one");
  }
  /** Submits command buffers and returns the submission serial (used to recycle pooled buffers safely). */
  submit(commandBuffers) {
    this.assertUsable();
    this.device.queue.submit(commandBuffers);
    const serial = ++this.submitted;
    const transient = this.transient;
    this.transient = [];
    void this.device.queue.onSubmittedWorkDone().then(
      () => {
        this.completed = Math.max(this.completed, serial);
        this.buffers.recycle(this.completed);
        for (const buffer of transient) buffer.destroy();
      },
      () => void 0
    );
    return serial;
  }
  /**
   * A uniform buffer holding `bytes`, destroyed automatically once the next submit completes: the per-run part of
   * a kernel.
   */
  uniformBuffer(label, bytes) {
    this.assertUsable();
    const buffer = this.device.createBuffer({
      label,
      size: bytes.byteLength,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST
    });
    this.device.queue.writeBuffer(buffer, 0, bytes);
    this.transient.push(buffer);
    return buffer;
  }
  /** Serial of the latest submission. */
  get lastSubmitted() {
    return this.submitted;
  }
  /** Serial of the latest submission known complete. */
  get lastCompleted() {
    return this.completed;
  }
  /** Waits for all submitted work. */
  async idle() {
    this.assertUsable();
    await this.device.queue.onSubmittedWorkDone();
    this.assertUsable();
    this.completed = this.submitted;
    this.buffers.recycle(this.completed);
  }
  /**
   * Runs `body` inside validation and out-of-memory error scopes and throws GpuValidationError if WebGPU reported
   * one, so a test sees the real message instead of a later, unrelated failure.
   */
  async withErrorScope(body) {
    this.device.pushErrorScope("out-of-memory");
    this.device.pushErrorScope("validation");
    let result;
    try {
      result = await body();
    } finally {
      const validation = await this.device.popErrorScope();
      const memory = await this.device.popErrorScope();
      const error = validation ?? memory;
      if (error) throw new GpuValidationError(error.message);
    }
    return result;
  }
  /**
   * Waits for in-flight work, destroys pooled buffers and, when we own it, the device; then drops the Dawn
   * instance reference (in that order, see ../shared/docs/webgpu-runtime.md).
   */
  async destroy() {
    if (this.destroyed) return;
    if (!this.lostError) await this.device.queue.onSubmittedWorkDone();
    this.destroyed = true;
    this.buffers.destroy();
    for (const buffer of this.transient) buffer.destroy();
    this.transient = [];
    this.pipelines.clear();
    if (this.ownsDevice) this.device.destroy();
    this.keepAlive = void 0;
  }
  /** Whether destroy() ran. */
  get isDestroyed() {
    return this.destroyed;
  }
  /** The object kept alive with the device (exposed for tests that check the Dawn rule). */
  get keptAlive() {
    return this.keepAlive;
  }
};

// src/node/gpu.ts
var ADAPTER_CHOICES = ["auto", "hardware", "software"];
function parseAdapterChoice(value, source) {
  if (value === void 0 || value === "") return "auto";
  if (ADAPTER_CHOICES.includes(value)) return value;
  throw new InvalidArgumentError(source, `must be auto, hardware or software; got "${value}"`);
}
function vulkanIcdDirectories(env = process.env) {
  const home = homedir();
  const configHome = env.XDG_CONFIG_HOME || join(home, ".config");
  const configDirs = (env.XDG_CONFIG_DIRS || "/etc/xdg").split(":").filter((d) => d !== "");
  const dataHome = env.XDG_DATA_HOME || join(home, ".local", "share");
  const dataDirs = (env.XDG_DATA_DIRS || "/usr/local/share:/usr/share").split(":").filter((d) => d !== "");
  const roots = [configHome, ...configDirs, "/usr/local/etc", "/etc", dataHome, ...dataDirs];
  return [...new Set(roots.map((root) => join(root, "vulkan", "icd.d")))];
}
var SOFTWARE_ICD = /swiftshader|lvp|lavapipe|llvmpipe/i;
function hardwareIcdManifests(directories = vulkanIcdDirectories(), env = process.env) {
  const manifests = (env.VK_ADD_DRIVER_FILES ?? "").split(":").filter((path) => path !== "" && existsSync(path));
  for (const dir of directories) {
    let names;
    try {
      names = readdirSync(dir).filter((name) => name.endsWith(".json"));
    } catch {
      continue;
    }
    for (const name of names) {
      const path = join(dir, name);
      if (SOFTWARE_ICD.test(name) || SOFTWARE_ICD.test(icdLibrary(path))) continue;
      manifests.push(path);
    }
  }
  return manifests;
}
function icdLibrary(manifest) {
  try {
    const parsed = JSON.parse(readFileSync(manifest, "utf8"));
    return typeof parsed.ICD?.library_path === "string" ? parsed.ICD.library_path : "";
  } catch {
    return "";
  }
}
var SWIFTSHADER_ICD_CANDIDATES = [
  "/usr/lib/chromium/vk_swiftshader_icd.json",
  "/usr/lib/chromium-browser/vk_swiftshader_icd.json",
  "/usr/lib64/chromium-browser/vk_swiftshader_icd.json"
];
var dawnInstances = [];
async function dawnInstance() {
  let webgpu;
  try {
    webgpu = await import("webgpu");
  } catch (error) {
    const reason = error instanceof Error ? error.message.split("\n")[0] : String(error);
    throw new NoAdapterError(`the npm package webgpu (Dawn) does not load here: ${reason}; reinstall the dependencies (npm ci) or run npm run setup`);
  }
  Object.assign(globalThis, webgpu.globals);
  const gpu2 = webgpu.create([]);
  dawnInstances.push(gpu2);
  return gpu2;
}
function findSwiftshaderIcd(explicit) {
  const candidates = [explicit, process.env.KVCOMPACT_SWIFTSHADER_ICD, ...SWIFTSHADER_ICD_CANDIDATES];
  return candidates.find((path) => typeof path === "string" && path !== "" && existsSync(path));
}
var INSTALL_HINT = "run `npm run setup` (as root on Debian/Ubuntu it installs chromium + libvulkan1 for the SwiftShader software adapter), or install your GPU vendor's Vulkan driver";
async function createNodeGpu(options = {}) {
  process.env.XDG_RUNTIME_DIR ??= "/tmp";
  const choice = options.adapter === void 0 ? parseAdapterChoice(process.env.KVCOMPACT_ADAPTER, "KVCOMPACT_ADAPTER") : parseAdapterChoice(options.adapter, "adapter");
  const told = (gpu3, why2) => {
    const { vendor, architecture, isFallbackAdapter } = gpu3.adapter;
    options.onAdapterChosen?.(
      `adapter ${vendor || "unknown"} / ${architecture || "unknown"}${isFallbackAdapter ? " (software)" : ""}: ${why2}`
    );
    return gpu3;
  };
  const icdFromEnv = process.env.VK_ICD_FILENAMES || process.env.VK_DRIVER_FILES;
  let why = "";
  if (choice === "hardware" || choice === "auto" && !icdFromEnv) {
    const drivers = process.platform === "linux" ? hardwareIcdManifests() : null;
    if (drivers?.length === 0 && choice === "hardware") {
      throw new NoAdapterError(`no hardware GPU adapter: no Vulkan GPU driver is installed (no driver manifest in ${vulkanIcdDirectories().join(", ")}); ${INSTALL_HINT}`);
    }
    if (drivers?.length === 0) {
      why = "no Vulkan GPU driver is installed (no driver manifest in the Vulkan icd.d directories)";
    } else {
      const gpu3 = await dawnInstance();
      const adapter = await gpu3.requestAdapter({ powerPreference: "high-performance" });
      if (adapter && !adapter.info.isFallbackAdapter) {
        const source = choice === "hardware" ? "hardware was asked for" : "a Vulkan GPU driver offered one";
        return told(await GpuContext.fromGpu(gpu3, { keepAlive: gpu3, ...options.limits ? { limits: options.limits } : {} }), `a hardware GPU, as ${source}`);
      }
      if (choice === "hardware") {
        throw new NoAdapterError(`no hardware GPU adapter found through Vulkan; ${INSTALL_HINT}`);
      }
      why = `the installed GPU drivers offered no hardware adapter${drivers ? ` (${drivers.join(", ")})` : ""}`;
    }
  } else if (choice === "software") {
    why = "software was asked for (--adapter software / KVCOMPACT_ADAPTER=software)";
  }
  if (choice === "software" || !icdFromEnv) {
    const icd = findSwiftshaderIcd(options.swiftshaderIcd);
    if (!icd) {
      throw new NoAdapterError(
        `no WebGPU adapter: no GPU driver and no SwiftShader ICD (looked in ${SWIFTSHADER_ICD_CANDIDATES.join(", ")}); ${INSTALL_HINT}`
      );
    }
    process.env.VK_ICD_FILENAMES = icd;
    if (process.env.VK_DRIVER_FILES) process.env.VK_DRIVER_FILES = icd;
    why = `SwiftShader (${icd}), as ${why}`;
  } else {
    why = `the Vulkan driver that VK_ICD_FILENAMES / VK_DRIVER_FILES names (${icdFromEnv})`;
  }
  const gpu2 = await dawnInstance();
  try {
    return told(await GpuContext.fromGpu(gpu2, { keepAlive: gpu2, ...options.limits ? { limits: options.limits } : {} }), why);
  } catch (error) {
    if (error instanceof NoAdapterError) {
      throw new NoAdapterError(
        `no WebGPU adapter with VK_ICD_FILENAMES=${process.env.VK_ICD_FILENAMES ?? ""} (is libvulkan1 installed?); ${INSTALL_HINT}`
      );
    }
    throw error;
  }
}

// shaders/score_stats.wgsl
var score_stats_default = "// Scores of the policies that need one pass over a head's tokens and no attention recomputation (h2o,\n// kvcompress, knorm, streaming, random, ...). The policy supplies\n//\n//   fn token_score(token: ScoredToken) -> f32\n//\n// (KernelSpec.functions, from the policy's GPU plan); this kernel gathers what it may read and applies the\n// protection (sinks, recent window). One thread per (layer of the range, kv head, logical token) of one\n// sequence slot, no barriers. READS_ATTN_SUM / READS_ATTN_SQ_SUM / READS_ATTN_COUNT come from the statistics the\n// plan declares: a statistic it did not declare reads as 0 and its binding holds a placeholder.\n\n@group(0) @binding(0) var<uniform> params: ScoreStatsParams;\n@group(0) @binding(1) var<storage, read> block_table: array<u32>;   // [layers][slots][kv_heads][max_blocks]\n@group(0) @binding(2) var<storage, read> context_lens: array<u32>;  // [layers][slots][kv_heads]\n@group(0) @binding(3) var<storage, read> full_pool: array<u32>;\n@group(0) @binding(4) var<storage, read> quant_pool: array<u32>;\n@group(0) @binding(5) var<storage, read> attn_sum: array<f32>;      // [row][max_tokens]\n@group(0) @binding(6) var<storage, read> attn_sq_sum: array<f32>;   // [row][max_tokens]\n@group(0) @binding(7) var<storage, read> attn_count: array<f32>;    // [row][max_tokens]\n@group(0) @binding(8) var<storage, read_write> scores: array<f32>;  // [row][max_tokens]\n\n// One cached token as token_score() sees it. Read its key and value channels with token_key / token_value.\nstruct ScoredToken {\n  layer: u32,\n  kv_head: u32,\n  // Logical index in the head, 0 = oldest cached token.\n  index: u32,\n  // Original position in the sequence.\n  position: u32,\n  // The run's seed (as u32 bits).\n  seed: u32,\n  // Accumulated attention statistics (ScoreInput.attnSum, attnSqSum, attnCount on the CPU).\n  attn_sum: f32,\n  attn_sq_sum: f32,\n  attn_count: f32,\n  // Where the token lives: block-table entry and slot in the block.\n  entry: u32,\n  block_slot: u32,\n}\n\n// Channel d (< HEAD_DIM) of the token's dequantized key.\nfn token_key(token: ScoredToken, d: u32) -> f32 {\n  return kv_value(token.entry, token.block_slot, d, false);\n}\n\n// Channel d (< HEAD_DIM) of the token's dequantized value.\nfn token_value(token: ScoredToken, d: u32) -> f32 {\n  return kv_value(token.entry, token.block_slot, d, true);\n}\n\n@compute @workgroup_size(WORKGROUP_SIZE)\nfn main(\n  @builtin(workgroup_id) wid: vec3<u32>,\n  @builtin(num_workgroups) nwg: vec3<u32>,\n  @builtin(local_invocation_index) lid: u32,\n) {\n  let group_index = linear_workgroup_index(wid, nwg);\n  let tiles = params.tiles;\n  if (group_index >= params.layer_count * KV_HEADS * tiles) {\n    return;\n  }\n  let layer = params.layer + group_index / (KV_HEADS * tiles);\n  let kv_head = (group_index / tiles) % KV_HEADS;\n  let t = (group_index % tiles) * WORKGROUP_SIZE + lid;\n  let row = (layer * params.seq_slots + params.slot) * KV_HEADS + kv_head;\n  if (t >= context_lens[row]) {\n    return;\n  }\n  let entry = block_table[row * params.max_blocks + t / BLOCK_SIZE];\n  let s = t % BLOCK_SIZE;\n  let stat = row * params.max_tokens + t;\n  var token = ScoredToken(layer, kv_head, t, kv_position(entry, s), params.seed, 0.0, 0.0, 0.0, entry, s);\n  if (READS_ATTN_SUM) {\n    token.attn_sum = attn_sum[stat];\n  }\n  if (READS_ATTN_SQ_SUM) {\n    token.attn_sq_sum = attn_sq_sum[stat];\n  }\n  if (READS_ATTN_COUNT) {\n    token.attn_count = attn_count[stat];\n  }\n  scores[stat] = protect_score(token_score(token), token.position, params.sinks, params.recent_start);\n}\n";

// shaders/kv_read.wgsl
var kv_read_default = "// Reading one token of a paged KV cache (not a kernel itself; prepended to kernels that read the cache).\n// The including kernel declares `full_pool` and `quant_pool` as storage arrays of u32. A block-table entry is a\n// block index, top bit set when the block lives in the quantized pool (src/cache/layout.ts).\n\nconst QUANT_POOL_BIT: u32 = 0x80000000u;\nconst MASKED_LOGIT: f32 = -3.0e38f;\n\nfn kv_is_quant(entry: u32) -> bool {\n  return (entry & QUANT_POOL_BIT) != 0u;\n}\n\nfn kv_block(entry: u32) -> u32 {\n  return entry & 0x7fffffffu;\n}\n\nfn full_value(block: u32, slot: u32, d: u32, v_part: bool) -> f32 {\n  let base = block * FULL_WORDS_PER_BLOCK + select(0u, FULL_V_OFFSET, v_part);\n  let i = slot * HEAD_DIM + d;\n  if (FULL_F16) {\n    let pair = unpack2x16float(full_pool[base + i / 2u]);\n    return select(pair.x, pair.y, (i & 1u) == 1u);\n  }\n  return bitcast<f32>(full_pool[base + i]);\n}\n\nfn quant_value(block: u32, slot: u32, d: u32, v_part: bool) -> f32 {\n  let base = block * QUANT_WORDS_PER_BLOCK;\n  let bit = (slot * HEAD_DIM + d) * QUANT_BITS;\n  let word = quant_pool[base + select(0u, QUANT_V_OFFSET, v_part) + bit / 32u];\n  let code = (word >> (bit % 32u)) & ((1u << QUANT_BITS) - 1u);\n  var param_index: u32;\n  if (v_part) {\n    param_index = QUANT_VP_OFFSET + slot * (HEAD_DIM / QUANT_GROUP) + d / QUANT_GROUP;\n  } else {\n    param_index = QUANT_KP_OFFSET + (slot / QUANT_GROUP) * HEAD_DIM + d;\n  }\n  let scale_zero = unpack2x16float(quant_pool[base + param_index]);\n  return f32(code) * scale_zero.x + scale_zero.y;\n}\n\n// Channel d of token `slot` of the block that `entry` names; K when v_part is false, V otherwise.\nfn kv_value(entry: u32, slot: u32, d: u32, v_part: bool) -> f32 {\n  if (HAS_QUANT && kv_is_quant(entry)) {\n    return quant_value(kv_block(entry), slot, d, v_part);\n  }\n  return full_value(kv_block(entry), slot, d, v_part);\n}\n\n// Original position of token `slot` of the block.\nfn kv_position(entry: u32, slot: u32) -> u32 {\n  if (HAS_QUANT && kv_is_quant(entry)) {\n    return quant_pool[kv_block(entry) * QUANT_WORDS_PER_BLOCK + QUANT_POS_OFFSET + slot];\n  }\n  return full_pool[kv_block(entry) * FULL_WORDS_PER_BLOCK + FULL_POS_OFFSET + slot];\n}\n";

// shaders/score_common.wgsl
var score_common_default = "// Helpers of the scoring kernels (not a kernel itself): protection of sinks and the recent window, exactly as\n// BasePolicy.score() in src/compress/policy.ts applies it on the CPU, and exact mulberry32 draws for policies\n// that score at random.\n\n// +Inf through a runtime bitcast: a const-expression may not evaluate to an infinity in WGSL.\nfn protected_score() -> f32 {\n  var bits = 0x7f800000u;\n  return bitcast<f32>(bits);\n}\n\n// `recent_start` = max(0, seqLen \u2212 protected recent): the host clamps it so a u32 compare matches the CPU's\n// `pos >= seqLen \u2212 recent` even when that difference is negative.\nfn protect_score(raw: f32, pos: u32, sinks: u32, recent_start: u32) -> f32 {\n  if (pos < sinks || pos >= recent_start) {\n    return protected_score();\n  }\n  return raw;\n}\n\n// Draw number `index` (0-based) of mulberry32(stream), as src/random.ts draws it: its state only ever adds\n// 0x6d2b79f5, so draw i is the output hash of stream + (i + 1)\xB70x6d2b79f5 and every token computes its own draw\n// independently.\nfn mulberry32_draw(stream: u32, index: u32) -> u32 {\n  var t = stream + (index + 1u) * 0x6d2b79f5u;\n  t = (t ^ (t >> 15u)) * (t | 1u);\n  t = t ^ (t + (t ^ (t >> 7u)) * (t | 61u));\n  return t ^ (t >> 14u);\n}\n\n// Math.fround(u / 2^32) exactly: round-to-nearest-even of u to 24 significant bits in integer arithmetic,\n// because WGSL leaves the rounding of a u32 \u2192 f32 conversion to the implementation.\nfn unit_interval(u: u32) -> f32 {\n  if (u < 0x1000000u) {\n    return ldexp(f32(u), -32);\n  }\n  let shift = 8u - countLeadingZeros(u);\n  var mantissa = u >> shift;\n  let rest = u & ((1u << shift) - 1u);\n  let half = 1u << (shift - 1u);\n  if (rest > half || (rest == half && (mantissa & 1u) == 1u)) {\n    mantissa += 1u;\n  }\n  return ldexp(f32(mantissa), i32(shift) - 32);\n}\n";

// shaders/common.wgsl
var common_default = "// Helpers shared by every kernel (not a kernel itself). Prepended after the generated constants.\n\n// Dispatches past maxComputeWorkgroupsPerDimension are folded into 2-D/3-D by the host; this recovers the\n// linear workgroup index. Kernels return early when it is past their real count.\nfn linear_workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {\n  return wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y;\n}\n";

// src/gpu/dispatch.ts
function foldDispatch(workgroups, maxPerDimension) {
  if (!Number.isInteger(workgroups) || workgroups <= 0) {
    throw new InvalidArgumentError("workgroups", `a dispatch needs a positive integer count; got ${workgroups}`);
  }
  if (workgroups <= maxPerDimension) return [workgroups, 1, 1];
  const y = Math.ceil(workgroups / maxPerDimension);
  if (y <= maxPerDimension) {
    const x = Math.ceil(workgroups / y);
    return [x, y, 1];
  }
  const z = Math.ceil(y / maxPerDimension);
  if (z > maxPerDimension) {
    throw new LimitExceededError("maxComputeWorkgroupsPerDimension\xB3", workgroups, maxPerDimension ** 3);
  }
  const yFolded = Math.ceil(y / z);
  return [Math.ceil(workgroups / (yFolded * z)), yFolded, z];
}

// src/gpu/prelude.ts
var IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;
function literal(constant, name) {
  switch (constant.type) {
    case "bool":
      return constant.value ? "true" : "false";
    case "f32": {
      if (!Number.isFinite(constant.value)) throw new InvalidArgumentError(name, "f32 constant must be finite");
      const text = String(constant.value);
      return `${/[.e]/.test(text) ? text : `${text}.0`}f`;
    }
    case "u32":
    case "i32":
      if (!Number.isInteger(constant.value)) throw new InvalidArgumentError(name, "integer constant expected");
      if (constant.type === "u32" && constant.value < 0) throw new InvalidArgumentError(name, "u32 must be \u2265 0");
      return `${constant.value}${constant.type === "u32" ? "u" : "i"}`;
  }
}
function wgslPrelude(constants, ...structs) {
  const lines = ["// generated by kvcompact: constants and uniform structs"];
  for (const [name, constant] of Object.entries(constants).sort(([a], [b]) => a.localeCompare(b))) {
    if (!IDENTIFIER.test(name)) throw new InvalidArgumentError("constants", `"${name}" is not a WGSL identifier`);
    lines.push(`const ${name}: ${constant.type} = ${literal(constant, name)};`);
  }
  for (const struct of structs) lines.push(struct.wgsl());
  return `${lines.join("\n")}

`;
}
function constantsKey(constants) {
  return Object.entries(constants).sort(([a], [b]) => a.localeCompare(b)).map(([name, c]) => `${name}=${c.type}:${String(c.value)}`).join(";");
}

// src/gpu/kernel.ts
var IDENTIFIER2 = /^[A-Za-z_][A-Za-z0-9_]*$/;
function checkFunction(kernel, fn) {
  if (!IDENTIFIER2.test(fn.name)) {
    throw new InvalidArgumentError("functions", `${kernel}: "${fn.name}" is not a WGSL identifier`);
  }
  if (!new RegExp(`\\bfn\\s+${fn.name}\\s*\\(`).test(fn.source)) {
    throw new InvalidArgumentError("functions", `${kernel}: the source given for ${fn.name} must declare "fn ${fn.name}(...)"`);
  }
  return fn.source;
}
function kernelSource(spec) {
  const functions = (spec.functions ?? []).map((fn) => checkFunction(spec.name, fn));
  const enables = (spec.enables ?? []).map((name) => {
    if (!IDENTIFIER2.test(name)) throw new InvalidArgumentError("enables", `${spec.name}: "${name}" is not a WGSL extension name`);
    return `enable ${name};
`;
  });
  return [...enables, wgslPrelude(spec.constants, ...spec.uniforms), common_default, ...spec.libraries ?? [], ...functions, spec.body].join("\n");
}
var libraryIds = /* @__PURE__ */ new Map();
function librariesKey(libraries) {
  return libraries.map((text) => {
    let id = libraryIds.get(text);
    if (id === void 0) {
      id = libraryIds.size;
      libraryIds.set(text, id);
    }
    return id;
  }).join(",");
}
function kernelPipeline(gpu2, spec) {
  const structs = spec.uniforms.map((u) => u.wgsl()).join("|");
  const functions = (spec.functions ?? []).map((fn) => `${fn.name}=${fn.source}`).join("|");
  const key = `${spec.name}#${spec.entryPoint ?? "main"}#${constantsKey(spec.constants)}#${structs}#${librariesKey(spec.libraries ?? [])}#${functions}#${(spec.enables ?? []).join(",")}`;
  return gpu2.pipelines.get(key, () => ({
    label: spec.name,
    code: kernelSource(spec),
    ...spec.entryPoint ? { entryPoint: spec.entryPoint } : {}
  }));
}
function isBuffer(binding) {
  return "mapState" in binding;
}
function encodeDispatch(gpu2, pass, pipeline, bindings, workgroups) {
  if (workgroups <= 0) {
    throw new InvalidArgumentError("workgroups", `${pipeline.label}: zero-length dispatch (${workgroups} workgroups)`);
  }
  const bindGroup = gpu2.device.createBindGroup({
    label: pipeline.label,
    layout: pipeline.getBindGroupLayout(0),
    entries: bindings.flatMap(
      (binding, index) => binding === null ? [] : [{ binding: index, resource: isBuffer(binding) ? { buffer: binding } : binding }]
    )
  });
  const count = foldDispatch(workgroups, gpu2.maxWorkgroupsPerDimension);
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bindGroup);
  pass.dispatchWorkgroups(count[0], count[1], count[2]);
  return count;
}

// src/gpu/uniforms.ts
var TYPE_INFO = {
  u32: { size: 4, align: 4, lanes: 1, kind: "u32" },
  i32: { size: 4, align: 4, lanes: 1, kind: "i32" },
  f32: { size: 4, align: 4, lanes: 1, kind: "f32" },
  "vec2<u32>": { size: 8, align: 8, lanes: 2, kind: "u32" },
  "vec2<f32>": { size: 8, align: 8, lanes: 2, kind: "f32" },
  "vec4<u32>": { size: 16, align: 16, lanes: 4, kind: "u32" },
  "vec4<f32>": { size: 16, align: 16, lanes: 4, kind: "f32" }
};
var UniformLayout = class {
  constructor(structName, fields) {
    this.structName = structName;
    this.fields = fields;
    const offsets = /* @__PURE__ */ new Map();
    let offset = 0;
    let maxAlign = 4;
    for (const field of fields) {
      if (offsets.has(field.name)) throw new InvalidArgumentError("fields", `duplicate uniform ${field.name}`);
      const info = TYPE_INFO[field.type];
      offset = Math.ceil(offset / info.align) * info.align;
      offsets.set(field.name, offset);
      offset += info.size;
      maxAlign = Math.max(maxAlign, info.align);
    }
    this.offsets = offsets;
    this.byteSize = Math.max(16, Math.ceil(offset / Math.max(16, maxAlign)) * Math.max(16, maxAlign));
  }
  structName;
  fields;
  offsets;
  /** Byte size of the struct, rounded up to 16 as uniform buffers require. */
  byteSize;
  /** The WGSL struct declaration. */
  wgsl() {
    const body = this.fields.map((field) => `  ${field.name}: ${field.type},`).join("\n");
    return `struct ${this.structName} {
${body}
}`;
  }
  /** Packs values into a fresh ArrayBuffer of `byteSize` bytes. Every field must be given and finite. */
  pack(values) {
    const buffer = new ArrayBuffer(this.byteSize);
    const view = new DataView(buffer);
    for (const field of this.fields) {
      const info = TYPE_INFO[field.type];
      const raw = values[field.name];
      const lanes2 = typeof raw === "number" ? [raw] : raw;
      if (lanes2 === void 0 || lanes2.length !== info.lanes) {
        throw new InvalidArgumentError(`uniform ${field.name}`, `expected ${info.lanes} value(s) for ${field.type}`);
      }
      const base = this.offsets.get(field.name) ?? 0;
      lanes2.forEach((value, lane) => {
        const at = base + lane * 4;
        if (info.kind === "f32") {
          view.setFloat32(at, value, true);
          return;
        }
        const bound = info.kind === "u32" ? [0, 4294967295] : [-2147483648, 2147483647];
        if (!Number.isInteger(value) || value < (bound[0] ?? 0) || value > (bound[1] ?? 0)) {
          throw new InvalidArgumentError(`uniform ${field.name}`, `${value} is not a valid ${info.kind}`);
        }
        if (info.kind === "u32") view.setUint32(at, value, true);
        else view.setInt32(at, value, true);
      });
    }
    return buffer;
  }
};

// src/kernels/cache/cache-constants.ts
function cacheConstants(full, quant) {
  const u32 = (value) => ({ type: "u32", value });
  return {
    HEAD_DIM: u32(full.headDim),
    BLOCK_SIZE: u32(full.blockSize),
    FULL_F16: { type: "bool", value: full.format === "f16" },
    FULL_WORDS_PER_BLOCK: u32(full.wordsPerBlock),
    FULL_V_OFFSET: u32(full.vOffset),
    FULL_POS_OFFSET: u32(full.positionsOffset),
    HAS_QUANT: { type: "bool", value: quant !== null },
    QUANT_BITS: u32(quant?.bits ?? 8),
    QUANT_GROUP: u32(quant?.groupSize ?? 1),
    QUANT_WORDS_PER_BLOCK: u32(quant?.wordsPerBlock ?? 1),
    QUANT_V_OFFSET: u32(quant?.vOffset ?? 0),
    QUANT_KP_OFFSET: u32(quant?.kParamsOffset ?? 0),
    QUANT_VP_OFFSET: u32(quant?.vParamsOffset ?? 0),
    QUANT_POS_OFFSET: u32(quant?.positionsOffset ?? 0)
  };
}

// src/kernels/compress/score-target.ts
function check(field, value, min) {
  if (!Number.isInteger(value) || value < min) {
    throw new InvalidArgumentError(field, `must be an integer \u2265 ${min}; got ${value}`);
  }
}
function checkScoreTarget(target, cache, blockSize, scores, kvHeads) {
  check("layer", target.layer, 0);
  check("layerCount", target.layerCount, 1);
  check("slot", target.slot, 0);
  check("seqLen", target.seqLen, 0);
  check("sinks", target.sinks, 0);
  check("recent", target.recent, 0);
  if (target.slot >= cache.seqSlots) {
    throw new InvalidArgumentError("slot", `${target.slot} is past the cache's ${cache.seqSlots} sequence slots`);
  }
  const maxTokens = cache.maxBlocksPerHead * blockSize;
  const rowsEnd = ((target.layer + target.layerCount - 1) * cache.seqSlots + target.slot + 1) * kvHeads;
  if (scores.size < rowsEnd * maxTokens * 4) {
    throw new InvalidArgumentError("scores", `holds ${scores.size} B; the target's rows need ${rowsEnd * maxTokens * 4} B`);
  }
  if (cache.contextLens.size < rowsEnd * 4) {
    throw new InvalidArgumentError("layer", `layers ${target.layer}..${target.layer + target.layerCount - 1} are past the cache`);
  }
  return { recentStart: Math.max(0, target.seqLen - target.recent), maxTokens };
}

// src/kernels/compress/score-stats.ts
var SCORE_STATS_PARAMS = new UniformLayout("ScoreStatsParams", [
  { name: "layer", type: "u32" },
  { name: "layer_count", type: "u32" },
  { name: "slot", type: "u32" },
  { name: "seq_slots", type: "u32" },
  { name: "max_blocks", type: "u32" },
  { name: "max_tokens", type: "u32" },
  { name: "tiles", type: "u32" },
  { name: "sinks", type: "u32" },
  { name: "recent_start", type: "u32" },
  { name: "seed", type: "u32" }
]);
var ATTENTION_STATISTICS = {
  attnSum: "READS_ATTN_SUM",
  attnSqSum: "READS_ATTN_SQ_SUM",
  attnCount: "READS_ATTN_COUNT"
};
var TOKEN_SCORE_SIGNATURE = /\bfn\s+token_score\s*\(\s*\w+\s*:\s*ScoredToken\s*\)\s*->\s*f32\b/;
var ScoreStatsKernel = class {
  constructor(gpu2, shape) {
    this.gpu = gpu2;
    this.shape = shape;
    const { label, score } = shape;
    if (!TOKEN_SCORE_SIGNATURE.test(score.wgsl)) {
      throw new InvalidArgumentError("wgsl", `${label}: the GPU plan must declare "fn token_score(token: ScoredToken) -> f32"`);
    }
    for (const statistic of score.statistics) {
      if (!(statistic in ATTENTION_STATISTICS)) {
        throw new InvalidArgumentError("statistics", `${label}: ${String(statistic)} is not one of ${Object.keys(ATTENTION_STATISTICS).join(", ")}`);
      }
    }
    const reads = Object.fromEntries(
      Object.entries(ATTENTION_STATISTICS).map(([statistic, constant]) => [
        constant,
        { type: "bool", value: score.statistics.includes(statistic) }
      ])
    );
    this.workgroupSize = shape.workgroupSize ?? 64;
    this.spec = {
      name: "score_stats",
      body: score_stats_default,
      libraries: [kv_read_default, score_common_default],
      functions: [{ name: "token_score", source: score.wgsl }],
      constants: {
        ...cacheConstants(shape.full, shape.quant),
        ...reads,
        WORKGROUP_SIZE: { type: "u32", value: this.workgroupSize },
        KV_HEADS: { type: "u32", value: shape.kvHeads }
      },
      uniforms: [SCORE_STATS_PARAMS]
    };
  }
  gpu;
  shape;
  spec;
  workgroupSize;
  /** Records the scoring pass into `encoder`. */
  encode(encoder, run) {
    const { label, score, kvHeads, full } = this.shape;
    const { recentStart, maxTokens } = checkScoreTarget(run.target, run.cache, full.blockSize, run.scores, kvHeads);
    const { stats } = run;
    if (score.statistics.length > 0 && !stats) {
      throw new InvalidArgumentError(
        "stats",
        `${label} reads ${score.statistics.join(", ")}: pass the accumulated attention statistics`
      );
    }
    const bound = (statistic) => (stats && score.statistics.includes(statistic) ? stats[statistic] : void 0) ?? run.cache.contextLens;
    const tiles = Math.ceil(maxTokens / this.workgroupSize);
    const uniforms = this.gpu.uniformBuffer(
      "score_stats:params",
      SCORE_STATS_PARAMS.pack({
        layer: run.target.layer,
        layer_count: run.target.layerCount,
        slot: run.target.slot,
        seq_slots: run.cache.seqSlots,
        max_blocks: run.cache.maxBlocksPerHead,
        max_tokens: maxTokens,
        tiles,
        sinks: Math.min(run.target.sinks, 4294967295),
        recent_start: Math.min(recentStart, 4294967295),
        seed: (run.seed ?? 0) >>> 0
      })
    );
    const pass = encoder.beginComputePass({ label: `score_stats:${label}` });
    encodeDispatch(
      this.gpu,
      pass,
      kernelPipeline(this.gpu, this.spec),
      [
        uniforms,
        run.cache.blockTable,
        run.cache.contextLens,
        run.cache.fullPool,
        run.cache.quantPool,
        bound("attnSum"),
        bound("attnSqSum"),
        bound("attnCount"),
        run.scores
      ],
      run.target.layerCount * kvHeads * tiles
    );
    pass.end();
  }
};

// shaders/snapkv_lse.wgsl
var snapkv_lse_default = "// SnapKV / TOVA, pass 1: partial softmax normalisers of every (layer of the range, window query, query head)\n// over one token partition of its KV head, for one sequence slot. One workgroup per (layer, KV head, chunk of\n// WORKGROUP_SIZE \xB7 PAIR_BLOCK (query, head) pairs of that KV head's group, partition); each thread holds\n// PAIR_BLOCK consecutive pairs' queries as values and reads every key of the partition once for all of them\n// (src/kernels/compress/snapkv-unrolled.ts says why that, not a workgroup-memory tile, is what pays). Online\n// softmax per pair and no barrier, so threads without pairs leave at once.\n// A window query sees tokens whose original position is \u2264 its own.\n// Output: lse[layer][partition][window row][head] = (max logit, \u03A3 exp(logit \u2212 max)) over the partition; the\n// score pass merges the partitions (max MASKED_LOGIT and \u03A3 0 where nothing is visible). The variant that stores\n// logits also writes every pair's logit of every token (pairs of a KV head j-major, as below).\n// The w rows used are the newest: positions seq_len \u2212 w .. seq_len \u2212 1, at ring index position mod window_cap.\n\n@group(0) @binding(0) var<uniform> params: SnapKVParams;\n@group(0) @binding(1) var<storage, read> window_q: array<f32>;      // [layers][slots][window_cap][N_HEADS][HEAD_DIM]\n@group(0) @binding(2) var<storage, read> window_pos: array<u32>;    // [layers][slots][window_cap]\n@group(0) @binding(3) var<storage, read> block_table: array<u32>;\n@group(0) @binding(4) var<storage, read> context_lens: array<u32>;\n@group(0) @binding(5) var<storage, read> full_pool: array<u32>;\n@group(0) @binding(6) var<storage, read> quant_pool: array<u32>;\n@group(0) @binding(7) var<storage, read_write> lse: array<f32>;     // [layer_count][partitions][window][N_HEADS][2]\n// Only in the variant that stores logits (`storedLogits` in the host): pass 2 then reads them back.\n@group(0) @binding(8) var<storage, read_write> logits: array<f32>;  // [layer_count][KV_HEADS][max_tokens][window \xB7 GROUP]\n\nconst GROUP: u32 = N_HEADS / KV_HEADS;\n// Channels as vec4 (zero-padded past HEAD_DIM): a quarter of the loop trips and address arithmetic, and dot().\nconst VEC: u32 = (HEAD_DIM + 3u) / 4u;\nconst CHUNK_PAIRS: u32 = WORKGROUP_SIZE * PAIR_BLOCK;\n\n@compute @workgroup_size(WORKGROUP_SIZE)\nfn main(\n  @builtin(workgroup_id) wid: vec3<u32>,\n  @builtin(num_workgroups) nwg: vec3<u32>,\n  @builtin(local_invocation_index) lid: u32,\n) {\n  let group_index = linear_workgroup_index(wid, nwg);\n  let pairs = params.window * GROUP;\n  let chunks = (pairs + CHUNK_PAIRS - 1u) / CHUNK_PAIRS;\n  if (group_index >= params.layer_count * KV_HEADS * chunks * params.partitions) {\n    return;\n  }\n  let p = group_index % params.partitions;\n  let chunk = (group_index / params.partitions) % chunks;\n  let kv_head = (group_index / (params.partitions * chunks)) % KV_HEADS;\n  let l = group_index / (params.partitions * chunks * KV_HEADS);\n  // This thread's pairs: PAIR_BLOCK consecutive ones, ordered j-major (window row, then head of the group).\n  let first_pair = chunk * CHUNK_PAIRS + lid * PAIR_BLOCK;\n  if (first_pair >= pairs) {\n    return;\n  }\n  let layer = params.layer + l;\n  let base = layer * params.seq_slots + params.slot;\n  let row = base * KV_HEADS + kv_head;\n  let len = context_lens[row];\n  let start = p * params.part_tokens;\n  let end = min(len, start + params.part_tokens);\n\n  // Pairs past the last are computed as the last one (the same reads) and not written.\n  var q_bases: array<u32, PAIR_BLOCK>;\n  var positions: array<u32, PAIR_BLOCK>;\n  for (var r = 0u; r < PAIR_BLOCK; r++) {\n    let pair = min(first_pair + r, pairs - 1u);\n    let ring = (params.seq_len - params.window + pair / GROUP) % params.window_cap;\n    positions[r] = window_pos[base * params.window_cap + ring];\n    q_bases[r] = ((base * params.window_cap + ring) * N_HEADS + kv_head * GROUP + pair % GROUP) * HEAD_DIM;\n  }\n  let queries = load_queries(q_bases, positions);\n\n  // Token-major, so that a workgroup's stores at one token are contiguous and pages are walked in order.\n  let logit_base = (l * KV_HEADS + kv_head) * params.max_tokens * pairs + first_pair;\n  let states = partition_states(queries, row, start, end, logit_base, pairs, pairs - first_pair);\n  for (var r = 0u; r < PAIR_BLOCK; r++) {\n    let pair = first_pair + r;\n    if (pair < pairs) {\n      let j = pair / GROUP;\n      let head = kv_head * GROUP + pair % GROUP;\n      let out = (((l * params.partitions + p) * params.window + j) * N_HEADS + head) * 2u;\n      lse[out] = states[r].x;\n      lse[out + 1u] = states[r].y;\n    }\n  }\n}\n";

// src/kernels/compress/snapkv-unrolled.ts
function lanes(headDim, v, read) {
  return `vec4<f32>(${[0, 1, 2, 3].map((c) => 4 * v + c < headDim ? read(4 * v + c) : "0.0").join(", ")})`;
}
function vecs(headDim) {
  return Array.from({ length: Math.ceil(headDim / 4) }, (_, v) => v);
}
function range(n) {
  return Array.from({ length: n }, (_, i) => i);
}
function snapkvKeyRead(headDim, fullF16, hasQuant) {
  if (!fullF16 || headDim % 4 !== 0) return "general";
  return hasQuant ? "mixed" : "words";
}
function common(headDim, keyRead) {
  const vs = vecs(headDim);
  const loadQuery = vs.map((v) => `  q[${v}] = ${lanes(headDim, v, (d) => `window_q[q_base + ${d}u]`)};`).join("\n");
  const wordPath = keyRead !== "general" ? [
    `  if (!(HAS_QUANT && kv_is_quant(entry))) {`,
    `    let w = kv_block(entry) * FULL_WORDS_PER_BLOCK + slot * (HEAD_DIM / 2u);`,
    ...vs.map((v) => `    key[${v}] = vec4<f32>(unpack2x16float(full_pool[w + ${2 * v}u]), unpack2x16float(full_pool[w + ${2 * v + 1}u]));`),
    `    return key;`,
    `  }`
  ] : [];
  const loadKey = vs.map((v) => `  key[${v}] = ${lanes(headDim, v, (d) => `kv_value(entry, slot, ${d}u, false)`)};`).join("\n");
  const dots = vs.map((v) => `dot(q[${v}], k[${v}])`).join(" + ");
  return [
    `fn load_query(q_base: u32) -> array<vec4<f32>, VEC> {`,
    `  var q: array<vec4<f32>, VEC>;`,
    loadQuery,
    `  return q;`,
    `}`,
    `fn load_key(entry: u32, slot: u32) -> array<vec4<f32>, VEC> {`,
    `  var key: array<vec4<f32>, VEC>;`,
    ...wordPath,
    ...keyRead === "words" ? [] : [loadKey],
    `  return key;`,
    `}`,
    `fn snapkv_logit(q: array<vec4<f32>, VEC>, k: array<vec4<f32>, VEC>) -> f32 {`,
    `  return (${dots}) * params.scale;`,
    `}`
  ].join("\n");
}
function snapkvUnrolledLse(headDim, block, keyRead, storeLogits = false) {
  const rs = range(block);
  return [
    common(headDim, keyRead),
    `struct PairQueries {`,
    ...rs.map((r) => `  q${r}: array<vec4<f32>, VEC>,`),
    ...rs.map((r) => `  p${r}: u32,`),
    `}`,
    `fn load_queries(q_bases: array<u32, PAIR_BLOCK>, positions: array<u32, PAIR_BLOCK>) -> PairQueries {`,
    `  return PairQueries(${[...rs.map((r) => `load_query(q_bases[${r}])`), ...rs.map((r) => `positions[${r}]`)].join(", ")});`,
    `}`,
    `fn partition_states(qs: PairQueries, row: u32, start: u32, end: u32, logit_base: u32, logit_stride: u32, valid: u32) -> array<vec2<f32>, PAIR_BLOCK> {`,
    ...rs.map((r) => `  var m${r} = MASKED_LOGIT;
  var s${r} = 0.0;`),
    `  for (var t = start; t < end; t++) {`,
    `    let entry = block_table[row * params.max_blocks + t / BLOCK_SIZE];`,
    `    let slot = t % BLOCK_SIZE;`,
    `    let pos = kv_position(entry, slot);`,
    `    let k = load_key(entry, slot);`,
    ...rs.flatMap((r) => [
      `    let l${r} = select(MASKED_LOGIT, snapkv_logit(qs.q${r}, k), pos <= qs.p${r});`,
      ...storeLogits ? [`    if (${r}u < valid) { logits[logit_base + t * logit_stride + ${r}u] = l${r}; }`] : [],
      `    let n${r} = max(m${r}, l${r});`,
      `    s${r} = s${r} * exp(m${r} - n${r}) + select(0.0, exp(l${r} - n${r}), pos <= qs.p${r});`,
      `    m${r} = n${r};`
    ]),
    `  }`,
    `  return array<vec2<f32>, PAIR_BLOCK>(${rs.map((r) => `vec2<f32>(m${r}, s${r})`).join(", ")});`,
    `}`
  ].join("\n");
}
function snapkvUnrolledScore(headDim, block, keyRead, storedLogits = false) {
  const rs = range(block);
  if (storedLogits) {
    return [
      `struct TokenKeys {`,
      ...rs.map((r) => `  t${r}: u32,`),
      ...rs.map((r) => `  p${r}: u32,`),
      `}`,
      `fn load_keys(entries: array<u32, TOKEN_BLOCK>, slots: array<u32, TOKEN_BLOCK>, positions: array<u32, TOKEN_BLOCK>, tokens: array<u32, TOKEN_BLOCK>) -> TokenKeys {`,
      `  return TokenKeys(${[...rs.map((r) => `tokens[${r}]`), ...rs.map((r) => `positions[${r}]`)].join(", ")});`,
      `}`,
      `fn pair_step(keys: TokenKeys, q_base: u32, logit_at: u32, logit_stride: u32, norm: vec2<f32>, qpos: u32, acc: array<f32, TOKEN_BLOCK>) -> array<f32, TOKEN_BLOCK> {`,
      `  return array<f32, TOKEN_BLOCK>(${rs.map((r) => `acc[${r}] + select(0.0, exp(logits[logit_at + keys.t${r} * logit_stride] - norm.x) * norm.y, keys.p${r} <= qpos)`).join(", ")});`,
      `}`
    ].join("\n");
  }
  return [
    common(headDim, keyRead),
    `struct TokenKeys {`,
    ...rs.map((r) => `  k${r}: array<vec4<f32>, VEC>,`),
    ...rs.map((r) => `  p${r}: u32,`),
    `}`,
    `fn load_keys(entries: array<u32, TOKEN_BLOCK>, slots: array<u32, TOKEN_BLOCK>, positions: array<u32, TOKEN_BLOCK>, tokens: array<u32, TOKEN_BLOCK>) -> TokenKeys {`,
    `  return TokenKeys(${[...rs.map((r) => `load_key(entries[${r}], slots[${r}])`), ...rs.map((r) => `positions[${r}]`)].join(", ")});`,
    `}`,
    `fn pair_masses(keys: TokenKeys, q: array<vec4<f32>, VEC>, norm: vec2<f32>, qpos: u32, acc: array<f32, TOKEN_BLOCK>) -> array<f32, TOKEN_BLOCK> {`,
    `  return array<f32, TOKEN_BLOCK>(${rs.map((r) => `acc[${r}] + select(0.0, exp(snapkv_logit(q, keys.k${r}) - norm.x) * norm.y, keys.p${r} <= qpos)`).join(", ")});`,
    `}`,
    `fn pair_step(keys: TokenKeys, q_base: u32, logit_at: u32, logit_stride: u32, norm: vec2<f32>, qpos: u32, acc: array<f32, TOKEN_BLOCK>) -> array<f32, TOKEN_BLOCK> {`,
    `  return pair_masses(keys, load_query(q_base), norm, qpos, acc);`,
    `}`
  ].join("\n");
}

// src/kernels/compress/snapkv-lse.ts
var SNAPKV_PARAMS = new UniformLayout("SnapKVParams", [
  { name: "layer", type: "u32" },
  { name: "layer_count", type: "u32" },
  { name: "slot", type: "u32" },
  { name: "seq_slots", type: "u32" },
  { name: "max_blocks", type: "u32" },
  { name: "max_tokens", type: "u32" },
  { name: "window", type: "u32" },
  { name: "window_cap", type: "u32" },
  { name: "seq_len", type: "u32" },
  { name: "tiles", type: "u32" },
  { name: "sinks", type: "u32" },
  { name: "recent_start", type: "u32" },
  { name: "scale", type: "f32" },
  { name: "write_means", type: "u32" },
  { name: "partitions", type: "u32" },
  { name: "part_tokens", type: "u32" }
]);
var SNAPKV_KEY_BLOCK = 8;
var SNAPKV_QUERY_BLOCK = 4;
function snapkvBlock(name, value) {
  const block = value ?? (name === "keyTile" ? SNAPKV_KEY_BLOCK : SNAPKV_QUERY_BLOCK);
  if (!Number.isInteger(block) || block <= 0 || block > 32) {
    throw new InvalidArgumentError(name, `must be an integer in 1..32 (values a thread holds); got ${block}`);
  }
  return block;
}
var SNAPKV_PARTITION_TOKENS = 1024;
function snapkvLseBytes(layerCount, rows, nHeads, maxTokens = 1, partitionTokens = SNAPKV_PARTITION_TOKENS) {
  return layerCount * Math.max(1, Math.ceil(maxTokens / partitionTokens)) * rows * nHeads * 2 * 4;
}
function snapkvLogitBytes(layerCount, rows, nHeads, maxTokens) {
  return layerCount * rows * nHeads * maxTokens * 4;
}
function packSnapKVParams(shape, run, tokensPerTile) {
  const { full, nHeads, kvHeads } = shape;
  const { target, window, rows } = run;
  const { recentStart, maxTokens } = checkScoreTarget(target, run.cache, full.blockSize, run.scores, kvHeads);
  if (!Number.isInteger(window.capacity) || window.capacity <= 0) {
    throw new InvalidArgumentError("window.capacity", `must be a positive integer; got ${window.capacity}`);
  }
  if (!Number.isInteger(window.valid) || window.valid < 0 || window.valid > Math.min(window.capacity, target.seqLen)) {
    throw new InvalidArgumentError("window.valid", `must be an integer in 0..min(capacity, seqLen); got ${window.valid}`);
  }
  if (!Number.isInteger(rows) || rows < 1 || rows > window.valid) {
    throw new InvalidArgumentError("rows", `must be in 1..${window.valid} (the valid window queries); got ${rows}`);
  }
  const ringEntries = (target.layer + target.layerCount) * run.cache.seqSlots * window.capacity;
  if (window.queries.size < ringEntries * nHeads * full.headDim * 4 || window.positions.size < ringEntries * 4) {
    const last = target.layer + target.layerCount - 1;
    throw new InvalidArgumentError("window", `the window buffers are too small for layers up to ${last}`);
  }
  if (run.lse.size < snapkvLseBytes(target.layerCount, rows, nHeads)) {
    throw new InvalidArgumentError("lse", `holds ${run.lse.size} B; ${snapkvLseBytes(target.layerCount, rows, nHeads)} B needed`);
  }
  if (shape.storedLogits) {
    const need = snapkvLogitBytes(target.layerCount, rows, nHeads, maxTokens);
    if (!run.logits || run.logits.size < need) {
      throw new InvalidArgumentError("logits", `a storedLogits kernel needs ${need} B of logit scratch; got ${run.logits?.size ?? "none"}`);
    }
  }
  const tiles = Math.ceil(maxTokens / tokensPerTile);
  const partitionTokens = shape.partitionTokens ?? SNAPKV_PARTITION_TOKENS;
  if (!Number.isInteger(partitionTokens) || partitionTokens <= 0) {
    throw new InvalidArgumentError("partitionTokens", `must be a positive integer; got ${partitionTokens}`);
  }
  const held = Math.floor(run.lse.size / snapkvLseBytes(target.layerCount, rows, nHeads));
  const partitions = Math.max(1, Math.min(held, Math.ceil(maxTokens / partitionTokens)));
  const bytes = SNAPKV_PARAMS.pack({
    layer: target.layer,
    layer_count: target.layerCount,
    slot: target.slot,
    seq_slots: run.cache.seqSlots,
    max_blocks: run.cache.maxBlocksPerHead,
    max_tokens: maxTokens,
    window: rows,
    window_cap: window.capacity,
    seq_len: target.seqLen,
    tiles,
    sinks: Math.min(target.sinks, 4294967295),
    recent_start: Math.min(recentStart, 4294967295),
    scale: run.scale ?? 1 / Math.sqrt(full.headDim),
    write_means: run.means ? 1 : 0,
    partitions,
    part_tokens: Math.ceil(maxTokens / partitions)
  });
  return { bytes, tiles, partitions };
}
var SnapKVLseKernel = class {
  constructor(gpu2, shape) {
    this.gpu = gpu2;
    this.shape = shape;
    if (shape.nHeads % shape.kvHeads !== 0) {
      throw new InvalidArgumentError("nHeads", `${shape.nHeads} query heads are not a multiple of ${shape.kvHeads} KV heads`);
    }
    this.workgroupSize = shape.workgroupSize ?? 64;
    if (!Number.isInteger(this.workgroupSize) || this.workgroupSize <= 0) {
      throw new InvalidArgumentError("workgroupSize", `must be a positive integer; got ${this.workgroupSize}`);
    }
    this.pairBlock = snapkvBlock("queryTile", shape.queryTile);
    this.spec = {
      name: "snapkv_lse",
      body: snapkv_lse_default,
      libraries: [
        snapkvUnrolledLse(shape.full.headDim, this.pairBlock, snapkvKeyRead(shape.full.headDim, shape.full.format === "f16", shape.quant !== null), shape.storedLogits),
        kv_read_default
      ],
      constants: {
        ...cacheConstants(shape.full, shape.quant),
        WORKGROUP_SIZE: { type: "u32", value: this.workgroupSize },
        N_HEADS: { type: "u32", value: shape.nHeads },
        KV_HEADS: { type: "u32", value: shape.kvHeads },
        PAIR_BLOCK: { type: "u32", value: this.pairBlock }
      },
      uniforms: [SNAPKV_PARAMS]
    };
  }
  gpu;
  shape;
  spec;
  workgroupSize;
  /** (Query, head) pairs per thread. */
  pairBlock;
  /** Records pass 1 into `encoder`. */
  encode(encoder, run) {
    const { bytes, partitions } = packSnapKVParams(this.shape, run, this.workgroupSize);
    const chunks = Math.ceil(run.rows * this.shape.nHeads / this.shape.kvHeads / (this.workgroupSize * this.pairBlock));
    const uniforms = this.gpu.uniformBuffer("snapkv_lse:params", bytes);
    const pass = encoder.beginComputePass({ label: "snapkv_lse" });
    encodeDispatch(
      this.gpu,
      pass,
      kernelPipeline(this.gpu, this.spec),
      [
        uniforms,
        run.window.queries,
        run.window.positions,
        run.cache.blockTable,
        run.cache.contextLens,
        run.cache.fullPool,
        run.cache.quantPool,
        run.lse,
        this.shape.storedLogits ? run.logits ?? null : null
      ],
      run.target.layerCount * this.shape.kvHeads * chunks * partitions
    );
    pass.end();
  }
};

// shaders/snapkv_score.wgsl
var snapkv_score_default = "// SnapKV / TOVA, pass 2: per (layer of the range, kv head, logical token) of one sequence slot, the mean over\n// the w window queries and the group's query heads of exp(logit \u2212 max) / \u03A3 (the partitions of\n// snapkv_lse.wgsl merged), then 1-D pooling over token order with 'same' padding (POOL_MAX: max; otherwise\n// \u03A3 / POOL_KERNEL, padding counted as zero as in avg_pool1d), then protection. Each thread holds TOKEN_BLOCK\n// keys as values (decoded once) and reads every (query, head) pair's query once for all of them\n// (src/kernels/compress/snapkv-unrolled.ts says why), or, in the variant that reads the logits pass 1 stored,\n// each pair's logit of each key (no key or query read at all); the pairs' merged normalisers are staged in workgroup\n// memory a tile of WORKGROUP_SIZE at a time. Pooling is fused: a workgroup computes the means of\n// WORKGROUP_SIZE \xB7 TOKEN_BLOCK consecutive tokens and writes the scores of all but POOL_RADIUS at each end\n// (recomputing the halo is cheaper than a second pass). TOVA is this kernel with w = 1 and POOL_KERNEL = 1.\n\n@group(0) @binding(0) var<uniform> params: SnapKVParams;\n@group(0) @binding(1) var<storage, read> window_q: array<f32>;      // [layers][slots][window_cap][N_HEADS][HEAD_DIM]\n@group(0) @binding(2) var<storage, read> window_pos: array<u32>;    // [layers][slots][window_cap]\n@group(0) @binding(3) var<storage, read> lse: array<f32>;           // [layer_count][partitions][window][N_HEADS][2]\n@group(0) @binding(4) var<storage, read> block_table: array<u32>;\n@group(0) @binding(5) var<storage, read> context_lens: array<u32>;\n@group(0) @binding(6) var<storage, read> full_pool: array<u32>;\n@group(0) @binding(7) var<storage, read> quant_pool: array<u32>;\n@group(0) @binding(8) var<storage, read_write> scores: array<f32>;  // [row][max_tokens]\n@group(0) @binding(9) var<storage, read_write> means: array<f32>;   // [row][max_tokens] when params.write_means\n// Only in the variant that reads stored logits (written by pass 1; window_q is then unused).\n@group(0) @binding(10) var<storage, read> logits: array<f32>;       // [layer_count][KV_HEADS][max_tokens][window \xB7 GROUP]\n\nconst GROUP: u32 = N_HEADS / KV_HEADS;\nconst POOL_KERNEL: u32 = 2u * POOL_RADIUS + 1u;\nconst SPAN: u32 = WORKGROUP_SIZE * TOKEN_BLOCK;\nconst OUT_TILE: u32 = SPAN - 2u * POOL_RADIUS;\n// Channels as vec4 (zero-padded past HEAD_DIM), as in snapkv_lse.wgsl.\nconst VEC: u32 = (HEAD_DIM + 3u) / 4u;\n\n// Per staged pair: (max, 1/\u03A3) of its merged normaliser, and its query's position.\nvar<workgroup> norm_tile: array<vec2<f32>, WORKGROUP_SIZE>;\nvar<workgroup> qpos_tile: array<u32, WORKGROUP_SIZE>;\nvar<workgroup> mean_shared: array<f32, SPAN>;\n\n@compute @workgroup_size(WORKGROUP_SIZE)\nfn main(\n  @builtin(workgroup_id) wid: vec3<u32>,\n  @builtin(num_workgroups) nwg: vec3<u32>,\n  @builtin(local_invocation_index) lid: u32,\n) {\n  let group_index = linear_workgroup_index(wid, nwg);\n  let tiles = params.tiles;\n  if (group_index >= params.layer_count * KV_HEADS * tiles) {\n    return;\n  }\n  let l = group_index / (KV_HEADS * tiles);\n  let layer = params.layer + l;\n  let kv_head = (group_index / tiles) % KV_HEADS;\n  let out_start = (group_index % tiles) * OUT_TILE;\n  let base = layer * params.seq_slots + params.slot;\n  let row = base * KV_HEADS + kv_head;\n  let len = context_lens[row];\n  // Uniform per workgroup (row depends only on the workgroup), so returning before the barriers is allowed.\n  if (out_start >= len) {\n    return;\n  }\n  // Key r of this thread is token out_start \u2212 R + r\xB7WORKGROUP_SIZE + lid (unsigned: below 0 it wraps past\n  // len = padding), at shared index r\xB7WORKGROUP_SIZE + lid. A slot without a token reads token 0 of its row's\n  // first block and gets position 0xffffffff, which no query sees.\n  var entries: array<u32, TOKEN_BLOCK>;\n  var slots: array<u32, TOKEN_BLOCK>;\n  var positions: array<u32, TOKEN_BLOCK>;\n  var tokens: array<u32, TOKEN_BLOCK>;\n  for (var r = 0u; r < TOKEN_BLOCK; r++) {\n    let t_mean = out_start + r * WORKGROUP_SIZE + lid - POOL_RADIUS;\n    let has_token = out_start + r * WORKGROUP_SIZE + lid >= POOL_RADIUS && t_mean < len;\n    let t_read = select(0u, t_mean, has_token);\n    entries[r] = block_table[row * params.max_blocks + t_read / BLOCK_SIZE];\n    slots[r] = t_read % BLOCK_SIZE;\n    tokens[r] = t_read;\n    positions[r] = select(0xffffffffu, kv_position(entries[r], slots[r]), has_token);\n  }\n  let keys = load_keys(entries, slots, positions, tokens);\n\n  let pairs = params.window * GROUP;\n  let logit_head = (l * KV_HEADS + kv_head) * params.max_tokens * pairs;\n  var acc: array<f32, TOKEN_BLOCK>;\n  for (var first = 0u; first < pairs; first += WORKGROUP_SIZE) {\n    let pair = first + lid;\n    var norm = vec2<f32>(0.0, 0.0);\n    var qpos = 0u;\n    if (pair < pairs) {\n      let j = pair / GROUP;\n      let head = kv_head * GROUP + pair % GROUP;\n      qpos = window_pos[base * params.window_cap + (params.seq_len - params.window + j) % params.window_cap];\n      // Merge the partitions' (max, \u03A3) into (max, 1/\u03A3); 1/\u03A3 = 0 when nothing is visible, which makes every\n      // probability of that query 0, as the reference's attention does.\n      var m = MASKED_LOGIT;\n      for (var p = 0u; p < params.partitions; p++) {\n        m = max(m, lse[(((l * params.partitions + p) * params.window + j) * N_HEADS + head) * 2u]);\n      }\n      var total = 0.0;\n      for (var p = 0u; p < params.partitions; p++) {\n        let at = (((l * params.partitions + p) * params.window + j) * N_HEADS + head) * 2u;\n        total += lse[at + 1u] * exp(lse[at] - m);\n      }\n      norm = vec2<f32>(m, select(0.0, 1.0 / total, total > 0.0));\n    }\n    norm_tile[lid] = norm;\n    qpos_tile[lid] = qpos;\n    workgroupBarrier();\n    let count = min(WORKGROUP_SIZE, pairs - first);\n    for (var k = 0u; k < count; k++) {\n      let pair_k = first + k;\n      let ring = (params.seq_len - params.window + pair_k / GROUP) % params.window_cap;\n      let q_base = ((base * params.window_cap + ring) * N_HEADS + kv_head * GROUP + pair_k % GROUP) * HEAD_DIM;\n      acc = pair_step(keys, q_base, logit_head + pair_k, pairs, norm_tile[k], qpos_tile[k], acc);\n    }\n    workgroupBarrier();\n  }\n  for (var r = 0u; r < TOKEN_BLOCK; r++) {\n    mean_shared[r * WORKGROUP_SIZE + lid] = select(0.0, acc[r] / f32(pairs), positions[r] != 0xffffffffu);\n  }\n  workgroupBarrier();\n  for (var r = 0u; r < TOKEN_BLOCK; r++) {\n    let at = r * WORKGROUP_SIZE + lid;\n    let t = out_start + at;\n    if (at < OUT_TILE && t < len) {\n      write_score(row, t, out_start, len);\n    }\n  }\n}\n\n// Pools, protects and writes the score of token t from the means in mean_shared.\nfn write_score(row: u32, t: u32, out_start: u32, len: u32) {\n  // Token u sits at shared index u \u2212 out_start + R.\n  if (params.write_means != 0u) {\n    means[row * params.max_tokens + t] = mean_shared[t - out_start + POOL_RADIUS];\n  }\n  // Window [t \u2212 R, t + R] clipped to [0, len \u2212 1].\n  let lo = max(t, POOL_RADIUS) - POOL_RADIUS;\n  let hi = min(t + POOL_RADIUS, len - 1u);\n  var pooled = mean_shared[lo - out_start + POOL_RADIUS];\n  for (var u = lo + 1u; u <= hi; u++) {\n    let v = mean_shared[u - out_start + POOL_RADIUS];\n    if (POOL_MAX) {\n      pooled = max(pooled, v);\n    } else {\n      pooled += v;\n    }\n  }\n  if (!POOL_MAX) {\n    pooled = pooled / f32(POOL_KERNEL);\n  }\n  let entry = block_table[row * params.max_blocks + t / BLOCK_SIZE];\n  let pos_t = kv_position(entry, t % BLOCK_SIZE);\n  scores[row * params.max_tokens + t] = protect_score(pooled, pos_t, params.sinks, params.recent_start);\n}\n";

// src/kernels/compress/snapkv-score.ts
var PLACEHOLDERS = /* @__PURE__ */ new WeakMap();
var SnapKVScoreKernel = class {
  constructor(gpu2, shape, pooling) {
    this.gpu = gpu2;
    this.shape = shape;
    this.pooling = pooling;
    if (shape.nHeads % shape.kvHeads !== 0) {
      throw new InvalidArgumentError("nHeads", `${shape.nHeads} query heads are not a multiple of ${shape.kvHeads} KV heads`);
    }
    if (!Number.isInteger(pooling.kernelSize) || pooling.kernelSize <= 0 || pooling.kernelSize % 2 === 0) {
      throw new InvalidArgumentError("kernelSize", `must be a positive odd integer; got ${pooling.kernelSize}`);
    }
    this.workgroupSize = shape.workgroupSize ?? 64;
    if (!Number.isInteger(this.workgroupSize) || this.workgroupSize <= 0) {
      throw new InvalidArgumentError("workgroupSize", `must be a positive integer; got ${this.workgroupSize}`);
    }
    const tokenBlock = snapkvBlock("keyTile", shape.keyTile);
    const radius = (pooling.kernelSize - 1) / 2;
    this.outTile = this.workgroupSize * tokenBlock - 2 * radius;
    if (this.outTile < 1) {
      throw new InvalidArgumentError("kernelSize", `${pooling.kernelSize} leaves no token of a workgroup's ${this.workgroupSize * tokenBlock} past its halo; use a smaller kernel`);
    }
    this.spec = {
      name: "snapkv_score",
      body: snapkv_score_default,
      libraries: [
        snapkvUnrolledScore(shape.full.headDim, tokenBlock, snapkvKeyRead(shape.full.headDim, shape.full.format === "f16", shape.quant !== null), shape.storedLogits),
        kv_read_default,
        score_common_default
      ],
      constants: {
        ...cacheConstants(shape.full, shape.quant),
        WORKGROUP_SIZE: { type: "u32", value: this.workgroupSize },
        N_HEADS: { type: "u32", value: shape.nHeads },
        KV_HEADS: { type: "u32", value: shape.kvHeads },
        POOL_RADIUS: { type: "u32", value: radius },
        TOKEN_BLOCK: { type: "u32", value: tokenBlock },
        POOL_MAX: { type: "bool", value: pooling.mode === "max" }
      },
      uniforms: [SNAPKV_PARAMS]
    };
  }
  gpu;
  shape;
  pooling;
  spec;
  workgroupSize;
  /** Tokens whose scores one workgroup writes: its threads × keyTile minus the pooling halo. */
  outTile;
  placeholder() {
    let buffer = PLACEHOLDERS.get(this.gpu);
    if (!buffer) {
      buffer = this.gpu.device.createBuffer({ label: "snapkv_score:no-means", size: 4, usage: GPUBufferUsage.STORAGE });
      PLACEHOLDERS.set(this.gpu, buffer);
    }
    return buffer;
  }
  /** Records pass 2 into `encoder` (after pass 1 of the same run). */
  encode(encoder, run) {
    const { bytes, tiles } = packSnapKVParams(this.shape, run, this.outTile);
    const uniforms = this.gpu.uniformBuffer("snapkv_score:params", bytes);
    const pass = encoder.beginComputePass({ label: "snapkv_score" });
    encodeDispatch(
      this.gpu,
      pass,
      kernelPipeline(this.gpu, this.spec),
      [
        uniforms,
        // The stored-logits variant reads no window query (its 'auto' layout has no binding 1).
        this.shape.storedLogits ? null : run.window.queries,
        run.window.positions,
        run.lse,
        run.cache.blockTable,
        run.cache.contextLens,
        run.cache.fullPool,
        run.cache.quantPool,
        run.scores,
        run.means ?? this.placeholder(),
        this.shape.storedLogits ? run.logits ?? null : null
      ],
      run.target.layerCount * this.shape.kvHeads * tiles
    );
    pass.end();
  }
};

// src/compress/gpu-policies.ts
function scoreScratchBytes(layerCount, windowCapacity, nHeads, maxTokens = 1) {
  return snapkvLseBytes(layerCount, windowCapacity, nHeads, maxTokens);
}
function logitScratchBytes(layerCount, windowCapacity, nHeads, maxTokens) {
  return snapkvLogitBytes(layerCount, windowCapacity, nHeads, maxTokens);
}
var STORED_LOGITS_MAX_BYTES = 64 * 1024 * 1024;
function encodeGpuScores(encoder, input, plan, protection, policyName = "this policy") {
  const { gpu: gpu2, cache, full, quant, kvHeads, nHeads } = input;
  const target = {
    layer: input.layer,
    layerCount: input.layerCount ?? 1,
    slot: input.slot,
    seqLen: input.seqLen,
    sinks: protection.sinks,
    recent: protection.recent
  };
  if (plan.kind === "token") {
    const kernel = new ScoreStatsKernel(gpu2, { label: policyName, score: plan, kvHeads, full, quant });
    kernel.encode(encoder, {
      cache,
      target,
      scores: input.scores,
      ...input.stats ? { stats: input.stats } : {},
      seed: input.seed ?? plan.seed ?? 0
    });
    return;
  }
  const { window, scratch } = input;
  if (!window || window.valid < 1) {
    throw new InvalidArgumentError("window", `${policyName} needs the observation-window queries (at least one valid)`);
  }
  if (!scratch) {
    throw new InvalidArgumentError("scratch", `${policyName} needs a scratch buffer of scoreScratchBytes() bytes`);
  }
  const rows = Math.min(plan.window, window.valid);
  const maxTokens = cache.maxBlocksPerHead * full.blockSize;
  const storedLogits = input.logits !== void 0 && input.logits.size >= snapkvLogitBytes(target.layerCount, rows, nHeads, maxTokens);
  const shape = { nHeads, kvHeads, full, quant, ...input.tiling, ...storedLogits ? { storedLogits } : {} };
  const run = {
    cache,
    target,
    window,
    rows,
    lse: scratch,
    scores: input.scores,
    ...input.scale !== void 0 ? { scale: input.scale } : {},
    ...input.means !== void 0 ? { means: input.means } : {},
    ...storedLogits && input.logits ? { logits: input.logits } : {}
  };
  new SnapKVLseKernel(gpu2, shape).encode(encoder, run);
  new SnapKVScoreKernel(gpu2, shape, { kernelSize: plan.kernelSize, mode: plan.pooling }).encode(encoder, run);
}

// src/compress/policy.ts
function planRequirements(plan) {
  return plan.kind === "window" ? { window: true, statistics: false } : { window: false, statistics: plan.statistics.length > 0 };
}
var DEFAULT_SINKS = 4;
var DEFAULT_RECENT = 32;
function nonNegativeInteger(field, value) {
  if (!Number.isInteger(value) || value < 0) {
    throw new InvalidArgumentError(field, `must be a non-negative integer; got ${value}`);
  }
  return value;
}
function checkScoreInput(input) {
  const { nHeads, kvHeads, headDim } = input;
  for (const [field, value] of [
    ["nHeads", nHeads],
    ["kvHeads", kvHeads],
    ["headDim", headDim]
  ]) {
    if (!Number.isInteger(value) || value <= 0) {
      throw new InvalidArgumentError(field, `must be a positive integer; got ${value}`);
    }
  }
  if (nHeads % kvHeads !== 0) throw new InvalidArgumentError("kvHeads", `must divide nHeads ${nHeads}`);
  if (input.keys.length !== kvHeads || input.positions.length !== kvHeads) {
    throw new InvalidArgumentError("keys", `expected keys and positions for each of ${kvHeads} KV heads`);
  }
  const tokens = [];
  for (let kv = 0; kv < kvHeads; kv++) {
    const len = input.keys[kv]?.length ?? 0;
    if (len % headDim !== 0) throw new InvalidArgumentError(`keys[${kv}]`, `length must be tokens \xD7 ${headDim}`);
    const n = len / headDim;
    if ((input.positions[kv]?.length ?? 0) !== n) {
      throw new InvalidArgumentError(`positions[${kv}]`, `expected ${n} positions (one per key)`);
    }
    for (const [field, stats] of [
      ["attnSum", input.attnSum],
      ["attnSqSum", input.attnSqSum],
      ["attnCount", input.attnCount]
    ]) {
      if (stats !== void 0 && (stats[kv]?.length ?? -1) !== n) {
        throw new InvalidArgumentError(`${field}[${kv}]`, `expected ${n} entries (one per key)`);
      }
    }
    tokens.push(n);
  }
  return tokens;
}
function sequenceLengthOf(input) {
  if (input.sequenceLength !== void 0) return input.sequenceLength;
  let max = -1;
  for (const pos of input.positions) for (const p of pos) if (p > max) max = p;
  return max + 1;
}
var BasePolicy = class {
  sinks;
  recent;
  recentLimit;
  constructor(options = {}) {
    this.sinks = nonNegativeInteger("sinks", options.sinks ?? DEFAULT_SINKS);
    this.recent = nonNegativeInteger("recent", options.recent ?? DEFAULT_RECENT);
    this.recentLimit = options.recentLimit ?? Number.POSITIVE_INFINITY;
    if (!(this.recentLimit >= 0)) throw new InvalidArgumentError("recentLimit", `must be \u2265 0; got ${this.recentLimit}`);
  }
  /**
   * Derived from {@link BasePolicy.gpuPlan}. A CPU-only policy (no plan) that reads the window or the statistics
   * overrides this.
   */
  get requires() {
    const plan = this.gpuPlan();
    return plan ? planRequirements(plan) : { window: false, statistics: false };
  }
  /**
   * Trailing positions this policy protects, given how many observation-window queries are available
   * (snapkv widens it to its observation window). CPU and GPU scoring both ask here, so they agree.
   */
  protectedRecent(_windowRows) {
    return this.recent;
  }
  /** The trailing positions protected: the policy's own rule, capped by `recentLimit`. */
  recentProtected(windowRows) {
    return Math.min(this.protectedRecent(windowRows), this.recentLimit);
  }
  /** How the policy scores on the GPU, as data; null when it cannot (scoreGpu then throws). */
  gpuPlan() {
    return null;
  }
  score(input) {
    const tokens = checkScoreInput(input);
    const scores = this.rawScore(input, tokens);
    const windowRows = input.windowQueries ? Math.floor(input.windowQueries.length / (input.nHeads * input.headDim)) : 0;
    const recentStart = sequenceLengthOf(input) - this.recentProtected(windowRows);
    for (let kv = 0; kv < input.kvHeads; kv++) {
      const s = scores[kv];
      const pos = input.positions[kv];
      if (!s || !pos || s.length !== tokens[kv]) {
        throw new InvalidArgumentError("scores", `${this.name} returned no or a wrongly sized array for KV head ${kv}`);
      }
      for (let t = 0; t < s.length; t++) {
        const p = pos[t] ?? 0;
        if (p < this.sinks || p >= recentStart) s[t] = Infinity;
      }
    }
    return scores;
  }
  /**
   * Encodes this policy's GPU kernels for one (layer range, slot): raw scores, then the same protection as
   * {@link BasePolicy.score}.
   *
   * @throws InvalidArgumentError when the policy has no GPU plan or the input lacks what the plan reads.
   */
  scoreGpu(encoder, input) {
    const plan = this.gpuPlan();
    if (!plan) {
      throw new InvalidArgumentError("policy", `${this.name} has no GPU scorer; score it on the CPU with score()`);
    }
    const windowRows = input.window?.valid ?? 0;
    encodeGpuScores(encoder, input, plan, { sinks: this.sinks, recent: this.recentProtected(windowRows) }, this.name);
  }
};

// src/compress/policies/h2o.ts
var H2OPolicy = class extends BasePolicy {
  name = "h2o";
  constructor(options = {}) {
    super(options);
  }
  gpuPlan() {
    return {
      kind: "token",
      statistics: ["attnSum", "attnCount"],
      wgsl: `fn token_score(token: ScoredToken) -> f32 {
  return select(0.0, token.attn_sum / token.attn_count, token.attn_count > 0.0);
}`
    };
  }
  rawScore(input, tokens) {
    const { attnSum, attnCount } = input;
    if (!attnSum || !attnCount) {
      throw new InvalidArgumentError("attnSum", "h2o needs accumulated attention (attnSum and attnCount)");
    }
    return tokens.map((n, kv) => {
      const sum = attnSum[kv] ?? new Float32Array(n);
      const count = attnCount[kv] ?? new Float32Array(n);
      return Float32Array.from({ length: n }, (_, t) => {
        const c = count[t] ?? 0;
        return c > 0 ? (sum[t] ?? 0) / c : 0;
      });
    });
  }
};

// src/compress/policies/knorm.ts
var KnormPolicy = class extends BasePolicy {
  name = "knorm";
  constructor(options = {}) {
    super(options);
  }
  gpuPlan() {
    return {
      kind: "token",
      statistics: [],
      wgsl: `fn token_score(token: ScoredToken) -> f32 {
  var norm2 = 0.0;
  for (var d = 0u; d < HEAD_DIM; d++) {
    let k = token_key(token, d);
    norm2 += k * k;
  }
  return -sqrt(norm2);
}`
    };
  }
  rawScore(input, tokens) {
    const d = input.headDim;
    return tokens.map((n, kv) => {
      const keys = input.keys[kv] ?? new Float32Array(n * d);
      return Float32Array.from({ length: n }, (_, t) => {
        let s = 0;
        for (let c = 0; c < d; c++) s += (keys[t * d + c] ?? 0) ** 2;
        return -Math.sqrt(s);
      });
    });
  }
};

// src/attention/reference-attention.ts
function checkShapes(input, queries) {
  const { nHeads, kvHeads, headDim } = input;
  for (const [field, value] of [
    ["nHeads", nHeads],
    ["kvHeads", kvHeads],
    ["headDim", headDim]
  ]) {
    if (!Number.isInteger(value) || value <= 0) {
      throw new InvalidArgumentError(field, `must be a positive integer; got ${value}`);
    }
  }
  if (nHeads % kvHeads !== 0) {
    throw new InvalidArgumentError("kvHeads", `must divide nHeads ${nHeads}; got ${kvHeads}`);
  }
  if (input.q.length !== queries * nHeads * headDim) {
    throw new InvalidArgumentError("q", `expected ${queries * nHeads * headDim} values; got ${input.q.length}`);
  }
  if (input.keys.length !== kvHeads || input.values.length !== kvHeads) {
    throw new InvalidArgumentError("keys", `expected one key and one value array per KV head (${kvHeads})`);
  }
  const tokens = [];
  for (let kv = 0; kv < kvHeads; kv++) {
    const kl = input.keys[kv]?.length ?? 0;
    if (kl % headDim !== 0 || (input.values[kv]?.length ?? 0) !== kl) {
      throw new InvalidArgumentError(`keys[${kv}]`, `keys and values must both be [tokens][${headDim}]`);
    }
    tokens.push(kl / headDim);
  }
  if (input.scale !== void 0 && !Number.isFinite(input.scale)) {
    throw new InvalidArgumentError("scale", `must be finite; got ${input.scale}`);
  }
  return tokens;
}
function attendOne(q, qOffset, keys, values, tokens, headDim, scale, visible, probs, out, outOffset) {
  let max = -Infinity;
  for (let t = 0; t < tokens; t++) {
    if (!visible(t)) {
      probs[t] = -Infinity;
      continue;
    }
    let dot = 0;
    for (let c = 0; c < headDim; c++) dot += (q[qOffset + c] ?? 0) * (keys[t * headDim + c] ?? 0);
    const logit = dot * scale;
    probs[t] = logit;
    if (logit > max) max = logit;
  }
  if (max === -Infinity) {
    probs.fill(0, 0, tokens);
    return;
  }
  let sum = 0;
  for (let t = 0; t < tokens; t++) {
    const p = (probs[t] ?? -Infinity) === -Infinity ? 0 : Math.exp((probs[t] ?? 0) - max);
    probs[t] = p;
    sum += p;
  }
  const acc = new Float64Array(headDim);
  for (let t = 0; t < tokens; t++) {
    const p = (probs[t] ?? 0) / sum;
    probs[t] = p;
    if (p === 0) continue;
    for (let c = 0; c < headDim; c++) acc[c] = (acc[c] ?? 0) + p * (values[t * headDim + c] ?? 0);
  }
  for (let c = 0; c < headDim; c++) out[outOffset + c] = acc[c] ?? 0;
}
function prefillAttention(input) {
  const { nHeads, kvHeads, headDim, queryPositions } = input;
  const queries = queryPositions.length;
  const tokens = checkShapes(input, queries);
  if (input.keyPositions.length !== kvHeads) {
    throw new InvalidArgumentError("keyPositions", `expected one array per KV head (${kvHeads})`);
  }
  for (let kv = 0; kv < kvHeads; kv++) {
    if ((input.keyPositions[kv]?.length ?? 0) !== tokens[kv]) {
      throw new InvalidArgumentError(`keyPositions[${kv}]`, `expected ${tokens[kv]} positions (one per key)`);
    }
  }
  const scale = input.scale ?? 1 / Math.sqrt(headDim);
  const group = nHeads / kvHeads;
  const out = new Float32Array(queries * nHeads * headDim);
  const probsPerKvHead = [];
  const sqProbsPerKvHead = [];
  const visibleCount = [];
  const probsPerQuery = [];
  for (let kv = 0; kv < kvHeads; kv++) {
    const n = tokens[kv] ?? 0;
    const keys = input.keys[kv] ?? new Float32Array(0);
    const values = input.values[kv] ?? new Float32Array(0);
    const kpos = input.keyPositions[kv] ?? new Uint32Array(0);
    const sum = new Float64Array(n);
    const sq = new Float64Array(n);
    const count = new Uint32Array(n);
    const perQuery = input.returnProbs ? new Float32Array(queries * n) : void 0;
    const probs = new Float64Array(n);
    for (let i = 0; i < queries; i++) {
      const qpos = queryPositions[i] ?? 0;
      const visible = (t) => (kpos[t] ?? 0) <= qpos;
      for (let t = 0; t < n; t++) if (visible(t)) count[t] = (count[t] ?? 0) + 1;
      for (let h = kv * group; h < (kv + 1) * group; h++) {
        const row = (i * nHeads + h) * headDim;
        attendOne(input.q, row, keys, values, n, headDim, scale, visible, probs, out, row);
        for (let t = 0; t < n; t++) {
          const p = probs[t] ?? 0;
          sum[t] = (sum[t] ?? 0) + p;
          sq[t] = (sq[t] ?? 0) + p * p;
          if (perQuery) perQuery[i * n + t] = (perQuery[i * n + t] ?? 0) + p;
        }
      }
    }
    probsPerKvHead.push(Float32Array.from(sum));
    sqProbsPerKvHead.push(Float32Array.from(sq));
    visibleCount.push(count);
    if (perQuery) probsPerQuery.push(perQuery);
  }
  return input.returnProbs ? { out, probsPerKvHead, sqProbsPerKvHead, visibleCount, probsPerQuery } : { out, probsPerKvHead, sqProbsPerKvHead, visibleCount };
}

// src/compress/policies/window.ts
function windowProbabilities(input, maxWindow, policy) {
  const { nHeads, headDim } = input;
  const q = input.windowQueries;
  if (!q || q.length === 0) {
    throw new InvalidArgumentError("windowQueries", `${policy} needs the observation-window queries [w][nHeads][headDim]`);
  }
  const row = nHeads * headDim;
  if (q.length % row !== 0) {
    throw new InvalidArgumentError("windowQueries", `length must be w \xD7 nHeads \xD7 headDim (${row}); got ${q.length}`);
  }
  const rows = q.length / row;
  const w = Math.min(maxWindow, rows);
  let positions = input.windowPositions;
  if (positions !== void 0 && positions.length !== rows) {
    throw new InvalidArgumentError("windowPositions", `expected ${rows} positions (one per window query)`);
  }
  if (positions === void 0) {
    const end = sequenceLengthOf(input);
    positions = Uint32Array.from({ length: rows }, (_, j) => Math.max(0, end - rows + j));
  }
  const result = prefillAttention({
    q: q.subarray((rows - w) * row),
    queryPositions: positions.subarray(rows - w),
    keys: input.keys,
    values: input.keys,
    // outputs are not needed; keys have the right shape
    keyPositions: input.positions,
    nHeads,
    kvHeads: input.kvHeads,
    headDim,
    returnProbs: true
  });
  return { probs: result.probsPerQuery ?? [], w };
}

// src/compress/policies/snapkv.ts
function pool1d(x, kernelSize, mode) {
  const r = Math.floor(kernelSize / 2);
  const out = new Float32Array(x.length);
  for (let t = 0; t < x.length; t++) {
    let acc = mode === "max" ? -Infinity : 0;
    for (let u = Math.max(0, t - r); u <= Math.min(x.length - 1, t + r); u++) {
      const v = x[u] ?? 0;
      acc = mode === "max" ? Math.max(acc, v) : acc + v;
    }
    out[t] = mode === "max" ? acc : acc / kernelSize;
  }
  return out;
}
var SnapKVPolicy = class extends BasePolicy {
  name = "snapkv";
  window;
  kernelSize;
  pooling;
  constructor(options = {}) {
    super(options);
    this.window = options.window ?? 32;
    this.kernelSize = options.kernelSize ?? 5;
    this.pooling = options.pooling ?? "avg";
    if (!Number.isInteger(this.window) || this.window <= 0) {
      throw new InvalidArgumentError("window", `must be a positive integer; got ${this.window}`);
    }
    if (!Number.isInteger(this.kernelSize) || this.kernelSize <= 0 || this.kernelSize % 2 === 0) {
      throw new InvalidArgumentError("kernelSize", `must be a positive odd integer (5 or 7); got ${this.kernelSize}`);
    }
    if (this.pooling !== "avg" && this.pooling !== "max") {
      throw new InvalidArgumentError("pooling", `must be 'avg' or 'max'; got ${String(this.pooling)}`);
    }
  }
  protectedRecent(windowRows) {
    return Math.max(this.recent, Math.min(this.window, windowRows));
  }
  gpuPlan() {
    return { kind: "window", window: this.window, kernelSize: this.kernelSize, pooling: this.pooling };
  }
  rawScore(input, tokens) {
    const { probs, w } = windowProbabilities(input, this.window, this.name);
    const group = input.nHeads / input.kvHeads;
    return tokens.map((n, kv) => {
      const p = probs[kv] ?? new Float32Array(0);
      const mean = new Float32Array(n);
      for (let t = 0; t < n; t++) {
        let s = 0;
        for (let j = 0; j < w; j++) s += p[j * n + t] ?? 0;
        mean[t] = s / (w * group);
      }
      return pool1d(mean, this.kernelSize, this.pooling);
    });
  }
};

// src/gpu/buffers.ts
function createStorageBuffer(gpu2, label, contents, extraUsage = 0) {
  const bytes = typeof contents === "number" ? contents : contents.byteLength;
  const size = Math.max(4, Math.ceil(bytes / 4) * 4);
  checkBufferSize(gpu2.limits, size, true);
  const buffer = gpu2.device.createBuffer({
    label,
    size,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST | extraUsage,
    mappedAtCreation: typeof contents !== "number"
  });
  if (typeof contents !== "number") {
    new Uint8Array(buffer.getMappedRange()).set(
      new Uint8Array(contents.buffer, contents.byteOffset, contents.byteLength)
    );
    buffer.unmap();
  }
  return buffer;
}

// src/format/layout.ts
function formatBits(format) {
  switch (format) {
    case "f32":
      return 32;
    case "f16":
      return 16;
    case "int8":
      return 8;
    case "int4":
      return 4;
    case "int2":
      return 2;
  }
}
function isQuantized(format) {
  return format === "int8" || format === "int4" || format === "int2";
}
function checkPositiveInteger(field, value) {
  if (!Number.isInteger(value) || value <= 0) {
    throw new InvalidArgumentError(field, `must be a positive integer; got ${value}`);
  }
}
function defaultGroupSize(headDim, blockSize) {
  let group = 32;
  while (group > 1 && (headDim % group !== 0 || blockSize % group !== 0)) group /= 2;
  return group;
}
function blockLayout(format, shape, groupSize) {
  const { headDim, blockSize } = shape;
  checkPositiveInteger("headDim", headDim);
  checkPositiveInteger("blockSize", blockSize);
  const bits = formatBits(format);
  const values = blockSize * headDim;
  if (!isQuantized(format)) {
    if (format === "f16" && headDim % 2 !== 0) {
      throw new InvalidArgumentError("headDim", `must be even for f16; got ${headDim}`);
    }
    const codeWords2 = values * bits / 32;
    const kOffset2 = 0;
    const vOffset2 = codeWords2;
    const positionsOffset2 = 2 * codeWords2;
    return {
      format,
      blockSize,
      headDim,
      groupSize: blockSize,
      bits,
      kOffset: kOffset2,
      vOffset: vOffset2,
      kParamsOffset: positionsOffset2,
      vParamsOffset: positionsOffset2,
      positionsOffset: positionsOffset2,
      wordsPerBlock: positionsOffset2 + blockSize
    };
  }
  const group = groupSize ?? defaultGroupSize(headDim, blockSize);
  checkPositiveInteger("groupSize", group);
  if (headDim % group !== 0) {
    throw new InvalidArgumentError("groupSize", `must divide head_dim ${headDim}; got ${group}`);
  }
  if (blockSize % group !== 0) {
    throw new InvalidArgumentError("groupSize", `must divide the block size ${blockSize}; got ${group}`);
  }
  if (values * bits % 32 !== 0) {
    throw new InvalidArgumentError("blockSize", `blockSize \xD7 headDim \xD7 bits must fill whole u32 words`);
  }
  const codeWords = values * bits / 32;
  const kParamWords = blockSize / group * headDim;
  const vParamWords = blockSize * (headDim / group);
  const kOffset = 0;
  const vOffset = codeWords;
  const kParamsOffset = 2 * codeWords;
  const vParamsOffset = kParamsOffset + kParamWords;
  const positionsOffset = vParamsOffset + vParamWords;
  return {
    format,
    blockSize,
    headDim,
    groupSize: group,
    bits,
    kOffset,
    vOffset,
    kParamsOffset,
    vParamsOffset,
    positionsOffset,
    wordsPerBlock: positionsOffset + blockSize
  };
}
function bytesPerBlock(layout) {
  return layout.wordsPerBlock * 4;
}
var QUANT_POOL_BIT = 2147483648;
function encodeBlockRef(pool, block) {
  return (pool === "quant" ? QUANT_POOL_BIT : 0) + block;
}

// src/bench/fixture.ts
function benchCacheSize(options) {
  const { kvHeads, headDim, blockSize, context } = options;
  if (!Number.isInteger(context) || context <= 0) {
    throw new InvalidArgumentError("context", `must be a positive integer; got ${context}`);
  }
  const full = blockLayout(options.full, { headDim, blockSize });
  const quant = options.quant ? blockLayout(options.quant, { headDim, blockSize }) : null;
  const blocksPerHead = Math.ceil(context / blockSize);
  const window = options.recent ?? 128;
  const quantBlocksPerHead = quant ? Math.max(0, Math.floor((context - window) / blockSize)) : 0;
  const fullBlocksPerHead = blocksPerHead - quantBlocksPerHead;
  return {
    full,
    quant,
    quantBlocksPerHead,
    fullBlocksPerHead,
    maxBlocksPerHead: blocksPerHead,
    blockBytesPerLayer: kvHeads * (fullBlocksPerHead * bytesPerBlock(full) + (quant ? quantBlocksPerHead * bytesPerBlock(quant) : 0)),
    tableBytesPerLayer: kvHeads * (blocksPerHead + 1) * 4
  };
}
function xorshift(seed) {
  let state = seed >>> 0 || 2654435769;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state;
  };
}
var F16_PAIR_MASK = 3154099199;
var F32_MASK = 3204448255;
var PARAM_MASK = 3154066431;
function shuffled(count, next) {
  const order = Uint32Array.from({ length: count }, (_, i) => i + 1);
  for (let i = count - 1; i > 0; i--) {
    const j = next() % (i + 1);
    const a = order[i] ?? 0;
    order[i] = order[j] ?? 0;
    order[j] = a;
  }
  return order;
}
function createMappedStorage(gpu2, label, words) {
  const size = Math.max(4, words * 4);
  checkBufferSize(gpu2.limits, size, true);
  const buffer = gpu2.device.createBuffer({
    label,
    size,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    mappedAtCreation: true
  });
  return { buffer, data: new Uint32Array(buffer.getMappedRange()) };
}
function buildBenchCache(gpu2, options) {
  const size = benchCacheSize(options);
  const { full, quant, quantBlocksPerHead, fullBlocksPerHead, maxBlocksPerHead } = size;
  const { layers, kvHeads, blockSize, context } = options;
  const next = xorshift(options.seed ?? 1);
  const rows = layers * kvHeads;
  const fullOrder = shuffled(rows * fullBlocksPerHead, next);
  const quantOrder = shuffled(rows * quantBlocksPerHead, next);
  const table = new Uint32Array(rows * maxBlocksPerHead);
  const contextLens = new Uint32Array(rows).fill(context);
  const fullPool = createMappedStorage(gpu2, "bench:full-pool", (1 + fullOrder.length) * full.wordsPerBlock);
  const quantPool = createMappedStorage(gpu2, "bench:quant-pool", quant ? (1 + quantOrder.length) * quant.wordsPerBlock : 1);
  const fill = (data, from, to, mask) => {
    for (let i = from; i < to; i++) data[i] = next() & mask;
  };
  try {
    for (let row = 0; row < rows; row++) {
      for (let b = 0; b < maxBlocksPerHead; b++) {
        const isQuant = b < quantBlocksPerHead;
        const layout = isQuant && quant ? quant : full;
        const physical = isQuant ? quantOrder[row * quantBlocksPerHead + b] ?? 0 : fullOrder[row * fullBlocksPerHead + (b - quantBlocksPerHead)] ?? 0;
        table[row * maxBlocksPerHead + b] = encodeBlockRef(isQuant ? "quant" : "full", physical);
        const data = isQuant ? quantPool.data : fullPool.data;
        const base = physical * layout.wordsPerBlock;
        if (isQuant) {
          fill(data, base, base + layout.kParamsOffset, 4294967295);
          fill(data, base + layout.kParamsOffset, base + layout.positionsOffset, PARAM_MASK);
        } else {
          fill(data, base, base + layout.positionsOffset, layout.format === "f16" ? F16_PAIR_MASK : F32_MASK);
        }
        for (let s = 0; s < blockSize; s++) data[base + layout.positionsOffset + s] = b * blockSize + s;
      }
    }
  } finally {
    fullPool.buffer.unmap();
    quantPool.buffer.unmap();
  }
  const bindings = {
    blockTable: createStorageBuffer(gpu2, "bench:block-table", table),
    contextLens: createStorageBuffer(gpu2, "bench:context-lens", contextLens),
    fullPool: fullPool.buffer,
    quantPool: quantPool.buffer,
    seqSlots: 1,
    maxBlocksPerHead
  };
  return {
    ...size,
    bindings,
    destroy() {
      for (const b of [bindings.blockTable, bindings.contextLens, bindings.fullPool, bindings.quantPool]) b.destroy();
    }
  };
}
function randomFloats(count, seed) {
  const next = xorshift(seed);
  return Float32Array.from({ length: count }, () => next() / 2147483648 - 1);
}

// src/bench/units.ts
function formatTokens(tokens) {
  return tokens >= 1024 && tokens % 1024 === 0 ? `${tokens / 1024}K` : String(tokens);
}

// src/kernels/cache/paged-attention.ts
var ATTENTION_PARAMS = new UniformLayout("AttentionParams", [
  { name: "num_queries", type: "u32" },
  { name: "layer", type: "u32" },
  { name: "seq_slots", type: "u32" },
  { name: "max_blocks", type: "u32" },
  { name: "probs_stride", type: "u32" },
  { name: "scale", type: "f32" }
]);

// src/bench/cases/paged-attention-decode.ts
var ATTENTION_SHAPE = { nHeads: 32, kvHeads: 8, headDim: 128, blockSize: 16, recent: 128 };

// src/bench/cases/scoring.ts
var SCORING_POLICIES = [
  { name: "h2o", plan: new H2OPolicy().gpuPlan() },
  { name: "knorm", plan: new KnormPolicy().gpuPlan() },
  { name: "snapkv", plan: new SnapKVPolicy().gpuPlan() }
];
var CONTEXTS = [1024, 4096, 16384];
var QUICK_CONTEXTS = [1024];
var PROTECTION = { sinks: 4, recent: 32 };
var scoringSuite = {
  name: "scoring",
  description: "per-token eviction scores, one layer, 8 KV heads (32 query heads for snapkv), head_dim 128, f16 blocks of 16",
  counts: "h2o: block table + token positions + attnSum and attnCount read, scores written; knorm: block table + K halves and positions read, scores written; snapkv: block table + K halves and positions read once, 32 window queries (f32, 32 heads) and their positions read, per-(query, head) softmax normalisers written and read, scores written. snapkv computes every q\xB7k in both passes (register-blocked: each key read once per 4 (query, head) pairs, each query once per 8 keys), so it is compute-bound: the count is the traffic, not the work. Up to 64 MiB of logits (16K tokens at this shape) pass 1 stores them and pass 2 reads them back instead (their write and read counted); snapkv-recompute: the same rows recomputing every logit in pass 2. snapkv-ts-reference: SnapKVPolicy.score() on the CPU at the same shape (f32 keys), by wall clock: the snapkv rows' speedup",
  cases: (settings2) => (settings2.quick ? QUICK_CONTEXTS : CONTEXTS).flatMap((context) => [
    // The TS reference of the window policy on the same CPU, at the same shape: the GPU row's baseline.
    ...settings2.quick ? [] : [
      {
        name: referenceName(context),
        shape: `ctx ${formatTokens(context)} \xB7 8kv \xB7 d128 \xB7 f32 \xB7 32q \xD7 window 32 \xB7 TS reference on the CPU`,
        series: "scoring snapkv (TS reference)",
        context,
        setup: () => prepareReference(context)
      }
    ],
    // snapkv takes seconds per execution on SwiftShader (2 cores): --quick leaves it to the full run.
    ...SCORING_POLICIES.filter(({ plan }) => !(settings2.quick && plan.kind === "window")).map(
      ({ name, plan }) => ({
        name: `scoring/${name}/${formatTokens(context)}`,
        shape: `ctx ${formatTokens(context)} \xB7 8kv \xB7 d128 \xB7 f16${plan.kind === "window" ? ` \xB7 32q \xD7 window ${plan.window}` : ""}`,
        series: `scoring ${name}`,
        context,
        ...plan.kind === "window" && !settings2.quick ? { baseline: referenceName(context) } : {},
        setup: (gpu2) => prepareScoring(gpu2, context, plan, true)
      })
    ),
    // The window policy without stored logits (what runs past the cap), for the same-run comparison.
    ...settings2.quick ? [] : SCORING_POLICIES.filter(({ plan }) => plan.kind === "window").map(
      ({ name, plan }) => ({
        name: `scoring/${name}-recompute/${formatTokens(context)}`,
        shape: `ctx ${formatTokens(context)} \xB7 8kv \xB7 d128 \xB7 f16 \xB7 32q \xD7 window ${plan.kind === "window" ? plan.window : 0} \xB7 logits recomputed`,
        series: `scoring ${name} (recomputed logits)`,
        context,
        baseline: referenceName(context),
        setup: (gpu2) => prepareScoring(gpu2, context, plan, false)
      })
    )
  ])
};
function referenceName(context) {
  return `scoring/snapkv-ts-reference/${formatTokens(context)}`;
}
function prepareReference(context) {
  const { nHeads, kvHeads, headDim } = ATTENTION_SHAPE;
  const window = 32;
  const policy = new SnapKVPolicy({ ...PROTECTION, window });
  const positions = Uint32Array.from({ length: context }, (_, t) => t);
  const input = {
    nHeads,
    kvHeads,
    headDim,
    keys: Array.from({ length: kvHeads }, (_, kv) => randomFloats(context * headDim, context + 3 + kv)),
    positions: Array.from({ length: kvHeads }, () => positions),
    windowQueries: randomFloats(window * nHeads * headDim, 13),
    windowPositions: Uint32Array.from({ length: window }, (_, j) => context - window + j),
    sequenceLength: context
  };
  return {
    bytes: kvHeads * context * headDim * 4,
    items: { count: context, unit: "token" },
    run: async (clock) => {
      await clock(() => Promise.resolve(policy.score(input)));
    },
    destroy: () => void 0
  };
}
function prepareScoring(gpu2, context, plan, storeLogits) {
  const { nHeads, kvHeads, headDim, blockSize } = ATTENTION_SHAPE;
  const cache = buildBenchCache(gpu2, { layers: 1, kvHeads, headDim, blockSize, context, full: "f16", seed: context + 3 });
  const maxTokens = cache.maxBlocksPerHead * blockSize;
  const statWords = kvHeads * maxTokens;
  const attnSum = createStorageBuffer(gpu2, "bench:attn-sum", randomFloats(statWords, 11).map(Math.abs));
  const attnCount = createStorageBuffer(gpu2, "bench:attn-count", randomFloats(statWords, 12).map((x) => 1 + Math.abs(x) * 200));
  const scores = createStorageBuffer(gpu2, "bench:scores", statWords * 4);
  const window = plan.kind === "window" ? plan.window : 0;
  const windowPositions = new Uint32Array(Math.max(1, window));
  for (let p = context - window; p < context; p++) windowPositions[p % window] = p;
  const queries = createStorageBuffer(gpu2, "bench:window-q", randomFloats(Math.max(1, window * nHeads * headDim), 13));
  const positions = createStorageBuffer(gpu2, "bench:window-pos", windowPositions);
  const scratch = createStorageBuffer(gpu2, "bench:lse", scoreScratchBytes(1, Math.max(1, window), nHeads, maxTokens));
  const logitBytes = logitScratchBytes(1, Math.max(1, window), nHeads, maxTokens);
  const logits = plan.kind === "window" && storeLogits && logitBytes <= STORED_LOGITS_MAX_BYTES ? createStorageBuffer(gpu2, "bench:logits", logitBytes) : null;
  const buffers = [attnSum, attnCount, scores, queries, positions, scratch, ...logits ? [logits] : []];
  const rowTokens = kvHeads * context;
  const kBytesPerToken = headDim * 2;
  const common2 = cache.tableBytesPerLayer + rowTokens * 4 + rowTokens * 4;
  const bytes = plan.kind === "token" ? plan.statistics.length > 0 ? common2 + rowTokens * 4 * plan.statistics.length : common2 + rowTokens * kBytesPerToken : common2 + rowTokens * kBytesPerToken + window * nHeads * (headDim * 4 + 4) + 2 * (window * nHeads * 8) + (logits ? 2 * window * nHeads * context * 4 : 0);
  return {
    bytes,
    items: { count: context, unit: "token" },
    encode: (encoder) => encodeGpuScores(
      encoder,
      {
        gpu: gpu2,
        cache: cache.bindings,
        full: cache.full,
        quant: null,
        nHeads,
        kvHeads,
        layer: 0,
        layerCount: 1,
        slot: 0,
        seqLen: context,
        stats: { attnSum, attnSqSum: attnSum, attnCount },
        window: { queries, positions, capacity: Math.max(1, window), valid: window },
        scratch,
        scores,
        ...logits ? { logits } : {}
      },
      plan,
      PROTECTION
    ),
    destroy: () => {
      cache.destroy();
      for (const b of buffers) b.destroy();
    }
  };
}

// src/kernels/cache/copy.ts
var COPY_PARAMS = new UniformLayout("CopyParams", [{ name: "count", type: "u32" }]);

// src/bench/harness.ts
function benchSettings(quick) {
  return quick ? { quick, warmup: 1, runs: 5, minRuns: 3, caseBudgetMs: 1500, targetSampleMs: 4, maxRepeat: 64 } : { quick, warmup: 2, runs: 15, minRuns: 3, caseBudgetMs: 1e4, targetSampleMs: 10, maxRepeat: 256 };
}

// ../scratch/snap-ab.ts
var ctx = Number(process.argv[2] ?? 1024);
var samples = Number(process.argv[3] ?? 5);
var gpu = await createNodeGpu({});
var settings = benchSettings(false);
var cases = scoringSuite.cases(settings).filter((c) => c.context === ctx && /snapkv/.test(c.name));
var prepared = [];
for (const c of cases) {
  const p = await c.setup(gpu);
  prepared.push({ name: c.name, p });
}
async function once(p) {
  await gpu.device.queue.onSubmittedWorkDone();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  if (p.run) await p.run(async (body) => body());
  else {
    const enc = gpu.device.createCommandEncoder();
    p.encode(enc, { pass: () => void 0 });
    gpu.device.queue.submit([enc.finish()]);
    await gpu.device.queue.onSubmittedWorkDone();
  }
  const c = process.cpuUsage(c0);
  return [(c.user + c.system) / 1e3, performance.now() - t0];
}
for (const { p } of prepared) await once(p);
var res = /* @__PURE__ */ new Map();
for (let s = 0; s < samples; s++) {
  for (const { name, p } of prepared) {
    const r = await once(p);
    (res.get(name) ?? res.set(name, []).get(name)).push(r);
  }
}
var med = (a) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)];
for (const [name, rs] of res) console.log(name.padEnd(36), "cpu ms", med(rs.map((r) => r[0])).toFixed(0), " wall ms", med(rs.map((r) => r[1])).toFixed(0), " min cpu", Math.min(...rs.map((r) => r[0])).toFixed(0));
process.exit(0);
