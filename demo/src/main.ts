import type { Bits } from '../../src/format/layout.js';
// The live demo page: the Generator (src/app) on the page's WebGPU device, with views of what the cache keeps.
import { Generator, type GenerateResult, type GenerationReport } from '../../src/app/generator.js';
import type { BudgetMode } from '../../src/compress/budgets.js';
import { policyNames } from '../../src/compress/registry.js';
import { NoAdapterError } from '../../src/errors.js';
import { GpuContext } from '../../src/gpu/context.js';
import { StoreStates } from '../../src/app/store-reuse.js';
import type { GenerationStoreReport } from '../../src/app/generation-types.js';
import { openBrowserTier } from '../../src/store/browser-tier.js';
import { CompareView } from './compare-view.js';
import { HeatGrid } from './heatmap.js';
import { BlockView, Gauge } from './memory-view.js';
import { isHfModelFile, loadDropped, loadFromServer, loadHfFromServer, type LoadedModel } from './model-loader.js';

/** Settings of one run, as `window.__kvdemo.run` takes them (missing fields keep the form's values). */
interface DemoRunOptions {
  readonly prompt?: string;
  readonly steps?: number;
  readonly policy?: string;
  readonly budgetMode?: BudgetMode;
  readonly budget?: number;
  readonly bits?: Bits;
  readonly compare?: boolean;
  readonly heat?: boolean;
  /** Prompt-lookup speculative decoding (turns the side-by-side full cache off: it decodes token by token). */
  readonly speculate?: boolean;
  /**
   * Draft `numSpeculative` tokens every pass instead of the adaptive length (which drafts only where drafts pay,
   * a timing-dependent choice): what tests use to see drafts on any machine.
   */
  readonly fixedSpeculative?: boolean;
  /** Save and restore compressed caches in the browser's storage (turns compare and speculate off). */
  readonly reuse?: boolean;
}

/** What `run` resolves with: the engine's result plus what the gauge displays. */
interface DemoRunResult {
  readonly text: string;
  readonly tokens: number[];
  readonly report: GenerationReport;
  readonly gaugeText: string;
}

/** The programmatic API tests drive (window.__kvdemo). */
interface KvDemo {
  status: 'loading' | 'ready' | 'running' | 'no-webgpu' | 'error';
  error?: string;
  model?: string;
  run(options?: DemoRunOptions): Promise<DemoRunResult>;
  stop(): void;
}

/** One line per policy, so the page explains its own settings. */
const POLICY_HELP: Record<string, string> = {
  full: 'full — every token kept at f16: the reference the compressed run is compared with.',
  snapkv: 'snapkv — keeps the tokens the newest 32 queries attend to most (pooled over neighbours), SnapKV.',
  h2o: 'h2o — heavy hitters: keeps the tokens with the highest mean attention received so far.',
  kvcompress: 'kvcompress — ranks by the running sum of squared attention: sharp attention beats diffuse attention.',
  tova: 'tova — keeps the tokens the latest query attends to most.',
  knorm: 'knorm — keeps keys with the smallest norm (they tend to draw attention); needs no statistics.',
  streaming: 'streaming — StreamingLLM: the attention sinks and the most recent tokens, nothing else.',
  random: 'random — a seeded random choice: the floor any policy should beat.',
};
const BUDGET_HELP =
  ' Sinks (first tokens) and a recent window are always kept; adakv/pyramid/global let heads and layers share the budget unevenly.';

function byId<T extends HTMLElement>(id: string, type: new () => T): T {
  const el = document.getElementById(id);
  if (!(el instanceof type)) throw new Error(`demo page: #${id} is missing`);
  return el;
}

const ui = {
  form: byId('settings', HTMLFormElement),
  prompt: byId('prompt', HTMLTextAreaElement),
  policy: byId('policy', HTMLSelectElement),
  policyHelp: byId('policy-help', HTMLElement),
  budgetMode: byId('budget-mode', HTMLSelectElement),
  budget: byId('budget', HTMLInputElement),
  bits: byId('bits', HTMLSelectElement),
  steps: byId('steps', HTMLInputElement),
  compare: byId('compare', HTMLInputElement),
  heat: byId('heat', HTMLInputElement),
  speculate: byId('speculate', HTMLInputElement),
  speculation: byId('speculation', HTMLElement),
  reuse: byId('reuse', HTMLInputElement),
  reuseStatus: byId('reuse-status', HTMLElement),
  generate: byId('generate', HTMLButtonElement),
  stop: byId('stop', HTMLButtonElement),
  dropzone: byId('dropzone', HTMLElement),
  files: byId('files', HTMLInputElement),
  folder: byId('folder', HTMLInputElement),
  modelStatus: byId('model-status', HTMLElement),
  settingLabel: byId('setting-label', HTMLElement),
  heatGrid: byId('heat-grid', HTMLElement),
  blocks: byId('blocks', HTMLElement),
  pool: byId('pool', HTMLElement),
  error: byId('error', HTMLElement),
  noWebgpu: byId('no-webgpu', HTMLElement),
  noWebgpuDetail: byId('no-webgpu-detail', HTMLElement),
};

const gauge = new Gauge(byId('gauge-fill', HTMLElement), byId('gauge-ratio', HTMLElement), byId('gauge-detail', HTMLElement));
const compare = new CompareView(byId('text', HTMLElement), byId('full-text', HTMLElement), byId('full-column', HTMLElement), byId('agreement', HTMLElement));

let gpu: GpuContext | null = null;
let loaded: LoadedModel | null = null;
let generator: Generator | null = null;
let abort: AbortController | null = null;

const demo: KvDemo = {
  status: 'loading',
  run: (options = {}) => {
    applyOptions(options);
    return start();
  },
  stop: () => abort?.abort(),
};
(window as unknown as { __kvdemo: KvDemo }).__kvdemo = demo;

function showError(message: string | null): void {
  ui.error.hidden = message === null;
  ui.error.textContent = message ?? '';
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

function setBusy(busy: boolean): void {
  ui.generate.disabled = busy || generator === null;
  ui.stop.disabled = !busy;
  for (const el of [ui.prompt, ui.policy, ui.budgetMode, ui.budget, ui.bits, ui.steps, ui.compare, ui.heat, ui.speculate, ui.reuse, ui.files, ui.folder]) el.disabled = busy;
  if (!busy) syncPolicyControls();
}

/** 'full' keeps everything: budget, budget mode and bits then mean nothing, so they are greyed. */
function syncPolicyControls(): void {
  const full = ui.policy.value === 'full';
  for (const el of [ui.budgetMode, ui.budget, ui.bits]) el.disabled = full || abort !== null;
  ui.policyHelp.textContent = (POLICY_HELP[ui.policy.value] ?? ui.policy.value) + (full ? '' : BUDGET_HELP);
  // Speculation verifies many tokens per pass; the side-by-side full cache decodes one by one beside it. A restored
  // state goes on alone: neither runs beside it.
  if (ui.reuse.checked) ui.speculate.checked = false;
  if (ui.speculate.checked || ui.reuse.checked) ui.compare.checked = false;
  ui.compare.disabled = ui.speculate.checked || ui.reuse.checked || abort !== null;
  ui.speculate.disabled = ui.reuse.checked || abort !== null;
}

function applyOptions(o: DemoRunOptions): void {
  if (o.prompt !== undefined) ui.prompt.value = o.prompt;
  if (o.steps !== undefined) ui.steps.value = String(o.steps);
  if (o.policy !== undefined) ui.policy.value = o.policy;
  if (o.budgetMode !== undefined) ui.budgetMode.value = o.budgetMode;
  if (o.budget !== undefined) ui.budget.value = String(o.budget);
  if (o.bits !== undefined) ui.bits.value = String(o.bits);
  if (o.compare !== undefined) ui.compare.checked = o.compare;
  if (o.heat !== undefined) ui.heat.checked = o.heat;
  if (o.speculate !== undefined) ui.speculate.checked = o.speculate;
  fixedSpeculative = o.fixedSpeculative === true;
  if (o.reuse !== undefined) ui.reuse.checked = o.reuse;
  syncPolicyControls();
}

async function start(): Promise<DemoRunResult> {
  if (!generator) throw new Error(`the demo is not ready (status: ${demo.status})`);
  if (abort) throw new Error('a generation is already running');
  const gen = generator;
  const prompt = ui.prompt.value;
  const steps = Number(ui.steps.value);
  const policy = ui.policy.value;
  const budgetMode = ui.budgetMode.value as BudgetMode;
  const budget = Number(ui.budget.value);
  const bits = Number(ui.bits.value) as Bits;
  const withFull = ui.compare.checked;
  const withHeat = ui.heat.checked;
  const speculate = ui.speculate.checked;
  const reuse = ui.reuse.checked ? await browserStore() : null;
  const { nLayers, nKvHeads } = gen.config;
  const promptTokens = gen.tokenizer.encode(prompt, { bos: true }).length;

  showError(null);
  abort = new AbortController();
  demo.status = 'running';
  setBusy(true);
  ui.settingLabel.textContent =
    policy === 'full' ? '(no compression)' : `(${policy}, ${budgetMode}, ${budget} tokens/head, ${bits === 16 ? 'f16' : `${bits}-bit`})`;
  compare.reset(prompt, withFull);
  ui.speculation.hidden = !speculate;
  ui.reuseStatus.hidden = reuse === null;
  ui.reuseStatus.textContent = '';
  ui.speculation.textContent = '';
  const pieces: { piece: string; drafted: boolean }[] = [];
  gauge.reset();
  const cache = gen.cacheFor(policy === 'full' ? 16 : bits);
  const blocks = new BlockView(ui.blocks, ui.pool, nLayers, nKvHeads, cache.shape.blockSize);
  const heat = new HeatGrid(ui.heatGrid, nLayers, nKvHeads, Math.max(1, promptTokens + steps - 1), Math.max(1, steps));
  ui.heatGrid.classList.toggle('off', !withHeat);
  try {
    const result: GenerateResult = await gen.generate({
      prompt,
      steps,
      policy,
      budgetMode,
      budget,
      bits,
      compareWithFull: withFull,
      heat: withHeat,
      ...(speculate ? { speculate: { method: 'ngram', ...(fixedSpeculative ? { adaptive: false } : {}) } as const } : {}),
      ...(reuse ? { store: reuse.states } : {}),
      signal: abort.signal,
      onStep: (s) => {
        if (speculate) {
          pieces.push({ piece: s.piece, drafted: s.drafted === true });
          compare.updatePieces(prompt, pieces);
          ui.speculation.textContent = speculationLine(pieces.length, s.forwardPasses ?? pieces.length, pieces.filter((p) => p.drafted).length);
        } else compare.update(prompt, s.text, s.quality);
        gauge.update(s.memory);
        blocks.update(s.blocks, s.memory);
        if (s.heat) heat.drawRow(s.step, s.heat);
        else heat.setKept(s.keptPerHead);
      },
    });
    if (result.report.quality) compare.finish(result.report.quality);
    const spec = result.report.speculative;
    if (spec) ui.speculation.textContent = speculationLine(result.report.generatedTokens, spec.forwardPasses, spec.accepted);
    if (reuse && result.report.store) {
      // The cold time to first token of these settings, remembered from a miss (on an earlier visit, maybe).
      const coldKey = `kvcompact-demo:cold-ttft:${JSON.stringify([loaded?.fingerprint, prompt, policy, budgetMode, budget, bits])}`;
      const ttft = result.report.ttftMs;
      if (!result.report.store.hit && ttft !== undefined) localStorage.setItem(coldKey, String(ttft));
      const cold = Number(localStorage.getItem(coldKey) ?? Number.NaN);
      ui.reuseStatus.textContent = reuseLine(result.report.store, ttft, Number.isFinite(cold) ? cold : undefined, reuse.kind);
    }
    return { text: result.text, tokens: result.tokens, report: result.report, gaugeText: gauge.text };
  } catch (error) {
    showError(describe(error));
    throw error;
  } finally {
    abort = null;
    demo.status = generator ? 'ready' : 'error';
    setBusy(false);
  }
}

/** Set by `__kvdemo.run({ fixedSpeculative })` for that run. */
let fixedSpeculative = false;

let store: { states: StoreStates; kind: string; fingerprint: string } | null = null;

/** The browser tier's saved states for the loaded model (opened on first use; a new model, a new namespace). */
async function browserStore(): Promise<{ states: StoreStates; kind: string } | null> {
  if (!loaded) return null;
  if (store?.fingerprint !== loaded.fingerprint) {
    const tier = await openBrowserTier({ maxBytes: 256 << 20, eviction: 'priority-decay' });
    store = { states: new StoreStates({ tiers: [tier], modelFingerprint: loaded.fingerprint, tenantSalt: 'kvcompact-demo' }), kind: tier.name, fingerprint: loaded.fingerprint };
  }
  return store;
}

/** What the store did for this run: the prefix restored instead of prefilled, and what was saved for next time. */
function reuseLine(report: GenerationStoreReport, ttftMs: number | undefined, coldMs: number | undefined, kind: string): string {
  let first = ttftMs === undefined ? '' : ` · first token after ${ttftMs.toFixed(0)} ms`;
  if (report.hit && ttftMs !== undefined && coldMs !== undefined) first += ` against ${coldMs.toFixed(0)} ms cold (${(coldMs - ttftMs).toFixed(0)} ms saved)`;
  const saved = report.saved > 0 ? ` · ${report.saved} state${report.saved === 1 ? '' : 's'} saved to ${kind}` : '';
  return report.hit
    ? `Restored ${report.hitTokens} of ${report.promptTokens} prompt tokens from ${kind} in ${report.restoreMs.toFixed(0)} ms; prefilled ${report.prefillTokens}${first}${saved}`
    : `Nothing saved for this prompt yet: prefilled all ${report.prefillTokens} tokens${first}${saved} (reload and run it again)`;
}

/** What speculation saved: tokens emitted against the forward passes they took (plain decoding: one each). */
function speculationLine(tokens: number, passes: number, drafted: number): string {
  return (
    `Speculative decoding: ${tokens} tokens in ${passes} forward passes (${Math.max(0, tokens - passes)} saved, ` +
    `${(tokens / Math.max(1, passes)).toFixed(2)} tokens per pass) · ${drafted} accepted draft tokens underlined`
  );
}

function useModel(model: LoadedModel): void {
  if (!gpu) return;
  const next = Generator.create(gpu, model.checkpoint, model.tokenizer);
  generator?.destroy();
  generator = next;
  loaded = model;
  const c = model.checkpoint.config;
  ui.modelStatus.replaceChildren();
  const name = document.createElement('b');
  name.textContent = model.name;
  ui.modelStatus.append(
    name,
    ` · ${c.nLayers} layers, ${c.nHeads} query / ${c.nKvHeads} KV heads of ${c.headSize}, vocabulary ${c.vocabSize}, context ${c.seqLen} · on ${gpu.adapter.vendor || 'GPU'} ${gpu.adapter.architecture}`,
  );
  ui.steps.max = String(Math.max(1, generator.maxTokens - 1));
  demo.model = model.name;
  demo.status = 'ready';
  setBusy(false);
}

function modelError(message: string): void {
  const bad = document.createElement('span');
  bad.className = 'bad';
  bad.textContent = message;
  ui.modelStatus.replaceChildren(bad);
}

async function onFiles(files: File[]): Promise<void> {
  if (abort) return;
  try {
    useModel(await loadDropped(files, loaded));
  } catch (error) {
    modelError(`${describe(error)}${loaded ? ` — still using ${loaded.name}` : ''}`);
  }
}

function wireDropzone(): void {
  const zone = ui.dropzone;
  zone.addEventListener('dragover', (event) => {
    event.preventDefault();
    zone.classList.add('over');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (event) => {
    event.preventDefault();
    zone.classList.remove('over');
    const transfer = event.dataTransfer;
    if (!transfer) return;
    // A dropped folder arrives as one entry without bytes: its files are read through the entry API.
    const entries = Array.from(transfer.items, (item) => item.webkitGetAsEntry()).filter((e): e is FileSystemEntry => e !== null);
    if (entries.some((e) => e.isDirectory)) {
      void droppedFiles(entries).then(onFiles, (error: unknown) => modelError(describe(error)));
    } else {
      void onFiles(Array.from(transfer.files));
    }
  });
  ui.files.addEventListener('change', () => void onFiles(Array.from(ui.files.files ?? [])));
  ui.folder.addEventListener('change', () => void onFiles(Array.from(ui.folder.files ?? []).filter((f) => isHfModelFile(f.name))));
}

/** The model files of dropped entries: files as they are, a folder's files one level down (a HF model folder). */
async function droppedFiles(entries: readonly FileSystemEntry[]): Promise<File[]> {
  const fileOf = (entry: FileSystemFileEntry) => new Promise<File>((done, fail) => entry.file(done, fail));
  const out: File[] = [];
  for (const entry of entries) {
    if (entry.isFile) out.push(await fileOf(entry as FileSystemFileEntry));
    else if (entry.isDirectory) {
      const reader = (entry as FileSystemDirectoryEntry).createReader();
      // readEntries answers in batches until an empty one.
      for (;;) {
        const batch = await new Promise<FileSystemEntry[]>((done, fail) => reader.readEntries(done, fail));
        if (batch.length === 0) break;
        for (const child of batch) if (child.isFile && isHfModelFile(child.name)) out.push(await fileOf(child as FileSystemFileEntry));
      }
    }
  }
  return out;
}

function noWebgpu(detail: string): void {
  ui.noWebgpu.hidden = false;
  ui.noWebgpuDetail.textContent = detail;
  demo.status = 'no-webgpu';
  demo.error = detail;
  modelError('WebGPU is not available: the model cannot run here');
  setBusy(false);
  ui.generate.disabled = true;
  ui.files.disabled = true;
  ui.folder.disabled = true;
  byId('app', HTMLElement).classList.add('no-gpu');
}

async function main(): Promise<void> {
  for (const name of ['full', ...policyNames()]) {
    const option = document.createElement('option');
    option.value = name;
    option.textContent = name === 'full' ? 'full (no compression)' : name;
    ui.policy.append(option);
  }
  ui.policy.value = 'snapkv';
  ui.budgetMode.value = 'adakv';
  ui.policy.addEventListener('change', syncPolicyControls);
  ui.form.addEventListener('submit', (event) => {
    event.preventDefault();
    // Errors are already on the page (showError); nothing else to do with the promise.
    start().catch(() => undefined);
  });
  ui.stop.addEventListener('click', () => demo.stop());
  setBusy(false);

  if (!('gpu' in navigator) || !navigator.gpu) {
    noWebgpu('navigator.gpu is undefined: this browser, or its settings, do not expose WebGPU.');
    return;
  }
  try {
    gpu = await GpuContext.fromNavigator();
  } catch (error) {
    noWebgpu(error instanceof NoAdapterError ? `WebGPU is there but gave no adapter: ${error.message}` : describe(error));
    return;
  }
  void gpu.lost.then((lost) => {
    if (!lost) return;
    demo.status = 'error';
    demo.error = lost.message;
    generator = null;
    showError(`${lost.message} — reload the page`);
    setBusy(false);
  });
  wireDropzone();
  const params = new URLSearchParams(location.search);
  const hf = params.get('hf');
  if (hf !== null) {
    const context = params.get('context');
    try {
      useModel(await loadHfFromServer(hf, context !== null ? { contextLength: Number(context) } : {}));
    } catch (error) {
      modelError(`could not load the Hugging Face folder ${hf}: ${describe(error)} — drop a model folder instead`);
      demo.status = 'error';
      demo.error = describe(error);
    }
    return;
  }
  const modelUrl = params.get('model') ?? '/models/stories260K.bin';
  const tokenizerUrl = params.get('tokenizer') ?? '/models/tok512.bin';
  try {
    useModel(await loadFromServer(modelUrl, tokenizerUrl));
  } catch (error) {
    modelError(`could not load ${modelUrl} + ${tokenizerUrl}: ${describe(error)} — drop a checkpoint and tokenizer instead`);
    demo.status = 'error';
    demo.error = describe(error);
  }
}

main().catch((error: unknown) => {
  demo.status = 'error';
  demo.error = describe(error);
  showError(describe(error));
});
