import { copyFileSync, mkdirSync, statSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { Generator, type GenerationReport } from '../src/app/generator.js';
import { serveStatic, type StaticServer } from '../src/node/static-server.js';
import { buildBundles, launchChromium } from './helpers/browser.js';
import { testGpu } from './helpers/gpu.js';
import { parseCheckpoint } from '../src/model/checkpoint.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { hfFolderFiles, tokenizerJsonFromLlama2c } from './hf-fixtures.js';
import { sharedBytes } from './model-helpers.js';

/** stories260K in the Hugging Face layout, as the files a user picks. */
function hfStoriesFiles(): { name: string; mimeType: string; buffer: Buffer }[] {
  const llama2c = parseCheckpoint(sharedBytes('models/stories260K.bin'));
  const files: Record<string, Uint8Array> = {
    ...hfFolderFiles({ ...llama2c.config, rmsNormEps: 1e-5, ropeTheta: 10000 }, llama2c.weights, 'F32'),
    'tokenizer.json': new TextEncoder().encode(JSON.stringify(tokenizerJsonFromLlama2c(Tokenizer.parse(sharedBytes('models/tok512.bin'), 512)))),
    'tokenizer_config.json': new TextEncoder().encode(JSON.stringify({ bos_token: '<s>', eos_token: '</s>' })),
  };
  return Object.entries(files).map(([name, bytes]) => ({ name, mimeType: 'application/octet-stream', buffer: Buffer.from(bytes) }));
}

interface DemoRunResult {
  text: string;
  tokens: number[];
  report: GenerationReport;
  gaugeText: string;
}

/** Small enough that h2o compresses several times within the prompt and 32 steps. */
const SETTINGS = {
  prompt: 'Once upon a time, there was a little',
  steps: 32,
  policy: 'h2o',
  budgetMode: 'uniform',
  budget: 16,
  bits: 4,
} as const;

function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  page.on('console', (message) => {
    // Chrome reports WebGPU validation errors as console warnings.
    if (message.type() === 'error' || (message.type() === 'warning' && /WebGPU|Invalid|While /.test(message.text()))) errors.push(message.text());
  });
  return errors;
}

describe('live demo page', () => {
  let browser: Browser;
  let site: StaticServer;

  beforeAll(async () => {
    buildBundles();
    site = await serveStatic('dist/demo', { mounts: { '/models/': '../shared/models' } });
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await site?.close();
  });

  it('generates the same tokens as the Node engine, shows the reported ratio, and saves a screenshot', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1180 } });
    const errors = watchErrors(page);
    await page.goto(`${site.url}index.html`);
    await page.waitForFunction(() => {
      const status = (window as unknown as { __kvdemo?: { status: string } }).__kvdemo?.status;
      return status !== undefined && status !== 'loading';
    }, null, { timeout: 60_000 });
    expect(await page.evaluate(() => (window as unknown as { __kvdemo: { status: string; error?: string } }).__kvdemo.error ?? '')).toBe('');

    // Chromium and Node each spend most of a cold run compiling pipelines on SwiftShader: run them side by side.
    const gpu = await testGpu();
    const generator = Generator.fromBytes(gpu, sharedBytes('models/stories260K.bin'), sharedBytes('models/tok512.bin'));
    const started = performance.now();
    let browserSeconds = 0;
    let nodeSeconds = 0;
    const [browserRun, nodeRun] = await Promise.all([
      page
        .evaluate(
          (settings) => (window as unknown as { __kvdemo: { run(o: unknown): Promise<unknown> } }).__kvdemo.run(settings),
          SETTINGS,
        )
        .then((result) => {
          browserSeconds = (performance.now() - started) / 1000;
          return result as DemoRunResult;
        }),
      generator.generate({ ...SETTINGS, compareWithFull: true }).then((result) => {
        nodeSeconds = (performance.now() - started) / 1000;
        return result;
      }),
    ]);
    generator.destroy();
    console.log(`demo page: 32 tokens in ${browserSeconds.toFixed(1)} s in Chromium, ${nodeSeconds.toFixed(1)} s in Node`);

    expect(browserRun.tokens).toHaveLength(SETTINGS.steps);
    expect(browserRun.tokens).toEqual(nodeRun.tokens);
    expect(browserRun.text).toBe(nodeRun.text);
    const report = browserRun.report;
    expect(report.compressions).toBeGreaterThan(0);
    expect(report.compressions).toBe(nodeRun.report.compressions);
    expect(report.ratio).toBeGreaterThan(1);
    expect(report.keptPerHead).toEqual(nodeRun.report.keptPerHead);
    expect(report.quality?.agreement).toBe(nodeRun.report.quality?.agreement);
    expect(browserRun.gaugeText).toBe(`${report.ratio.toFixed(2)}×`);
    expect(await page.textContent('#gauge-ratio')).toBe(browserRun.gaugeText);
    // One heat panel per (layer, KV head), and the text on the page is the generated text.
    expect(await page.locator('#heat-grid canvas').count()).toBe(report.keptPerHead.flat().length);
    expect((await page.textContent('#text')) ?? '').toBe(SETTINGS.prompt + browserRun.text);

    // The page right after the run, as a test artifact; KVCOMPACT_UPDATE_DOCS=1 also refreshes the README's picture
    // (not by default: a test run must not dirty tracked files).
    mkdirSync('artifacts', { recursive: true });
    await page.screenshot({ path: 'artifacts/demo.png', fullPage: true });
    expect(statSync('artifacts/demo.png').size).toBeGreaterThan(10_000);
    if (process.env.KVCOMPACT_UPDATE_DOCS === '1') copyFileSync('artifacts/demo.png', 'docs/demo.png');

    // Speculation: accepted drafts are marked in the text and the passes saved are counted.
    const quote = 'Lily had a big red ball. She liked to throw the ball to her dog, Max.';
    const specRun = (await page.evaluate(
      (settings) => (window as unknown as { __kvdemo: { run(o: unknown): Promise<unknown> } }).__kvdemo.run(settings),
      // A fixed draft length: the adaptive one drafts only where its timing says drafts pay (not on every machine).
      { prompt: `${quote} ${quote} ${quote.slice(0, 30)}`, steps: 24, policy: 'full', heat: false, compare: true, speculate: true, fixedSpeculative: true },
    )) as DemoRunResult;
    const spec = specRun.report.speculative;
    expect(spec).toBeDefined();
    expect(spec?.accepted).toBeGreaterThan(0);
    expect(spec?.forwardPasses).toBeLessThan(specRun.report.generatedTokens);
    expect(await page.isChecked('#compare')).toBe(false); // speculation turns the side-by-side run off
    const marked = await page.locator('#text .draft').count();
    expect(marked).toBeGreaterThan(0);
    expect(marked).toBeLessThanOrEqual(spec?.accepted ?? 0);
    expect(await page.textContent('#speculation')).toContain(
      `${specRun.report.generatedTokens} tokens in ${spec?.forwardPasses} forward passes (${specRun.report.generatedTokens - (spec?.forwardPasses ?? 0)} saved`,
    );

    // Dropped files: garbage is refused with a message, a checkpoint + tokenizer pair replaces the model.
    await page.setInputFiles('#files', [{ name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not a model') }]);
    await page.waitForSelector('#model-status .bad');
    expect(await page.textContent('#model-status')).toMatch(/none of the dropped files is a llama2\.c checkpoint.*still using stories260K\.bin/);
    await page.setInputFiles('#files', [
      { name: 'tok512.bin', mimeType: 'application/octet-stream', buffer: Buffer.from(sharedBytes('models/tok512.bin')) },
      { name: 'mine.bin', mimeType: 'application/octet-stream', buffer: Buffer.from(sharedBytes('models/stories260K.bin')) },
    ]);
    await page.waitForFunction(() => (window as unknown as { __kvdemo: { model?: string } }).__kvdemo.model === 'mine.bin + tok512.bin');
    expect(await page.isEnabled('#generate')).toBe(true);

    // A Hugging Face folder's files (stories260K converted): read from the Files by the same loader, same tokens.
    await page.setInputFiles('#files', hfStoriesFiles());
    await page.waitForFunction(() => (window as unknown as { __kvdemo: { model?: string } }).__kvdemo.model === 'dropped model (LlamaForCausalLM)');
    expect(await page.textContent('#model-status')).toContain('5 layers, 8 query / 4 KV heads of 8, vocabulary 512');
    const hfRun = (await page.evaluate(
      (settings) => (window as unknown as { __kvdemo: { run(o: unknown): Promise<unknown> } }).__kvdemo.run(settings),
      { ...SETTINGS, compare: false, speculate: false, heat: false },
    )) as DemoRunResult;
    expect(hfRun.tokens).toEqual(browserRun.tokens);

    expect(errors).toEqual([]);
    await page.close();
  });

  it('saves the compressed cache in the browser storage: after a reload the same prompt restores it, same tokens', async () => {
    const page = await browser.newPage();
    const errors = watchErrors(page);
    const ready = async (): Promise<void> => {
      await page.waitForFunction(() => (window as unknown as { __kvdemo?: { status: string } }).__kvdemo?.status === 'ready', null, { timeout: 60_000 });
    };
    const run = async (): Promise<DemoRunResult> =>
      (await page.evaluate(
        (settings) => (window as unknown as { __kvdemo: { run(o: unknown): Promise<unknown> } }).__kvdemo.run(settings),
        { ...SETTINGS, prompt: `${SETTINGS.prompt} girl named Lily. She loved to play outside in the park with her friends.`, steps: 12, heat: false, compare: false, reuse: true },
      )) as DemoRunResult;
    await page.goto(`${site.url}index.html`);
    await ready();
    const cold = await run();
    expect(cold.report.store?.hit).toBe(false);
    expect(cold.report.store?.saved).toBeGreaterThan(0);
    expect(await page.textContent('#reuse-status')).toMatch(/^Nothing saved for this prompt yet: prefilled all \d+ tokens/);
    await page.reload();
    await ready();
    const warm = await run();
    const store = warm.report.store;
    expect(store?.hit).toBe(true);
    expect(store?.hitTokens).toBeGreaterThan(16);
    expect(store?.prefillTokens).toBeLessThan(store?.promptTokens ?? 0);
    expect(warm.tokens).toEqual(cold.tokens);
    expect(await page.textContent('#reuse-status')).toMatch(/^Restored \d+ of \d+ prompt tokens from (opfs|indexeddb) in \d+ ms; prefilled \d+ .*cold \(-?\d+ ms saved\)/);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('says which browsers give WebGPU when navigator.gpu is missing, without page errors', async () => {
    const page = await browser.newPage();
    const errors = watchErrors(page);
    await page.addInitScript(() => {
      delete (Navigator.prototype as { gpu?: unknown }).gpu;
    });
    await page.goto(`${site.url}index.html`);
    await page.waitForFunction(() => (window as unknown as { __kvdemo?: { status: string } }).__kvdemo?.status === 'no-webgpu');
    const notice = page.locator('#no-webgpu');
    expect(await notice.isVisible()).toBe(true);
    const text = (await notice.textContent()) ?? '';
    for (const browserName of ['Chrome or Edge 113+', '--enable-unsafe-webgpu', 'Firefox 141+', 'Safari 26']) {
      expect(text).toContain(browserName);
    }
    expect(await page.isDisabled('#generate')).toBe(true);
    expect(errors).toEqual([]);
    await page.close();
  });
});
