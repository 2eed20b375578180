import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { SMOKE_SIZES, smokeInput } from '../demo/src/smoke-data.js';
import { createStorageBuffer, readBuffer } from '../src/gpu/buffers.js';
import { CopyKernel } from '../src/kernels/cache/copy.js';
import { serveStatic, type StaticServer } from '../src/node/static-server.js';
import { buildBundles, launchChromium } from './helpers/browser.js';
import { testGpu } from './helpers/gpu.js';

interface SmokeResult {
  adapter?: { vendor: string; architecture: string; isFallbackAdapter: boolean };
  outputs?: Record<string, number[]>;
  error?: string;
}

describe('Chrome WebGPU smoke page', () => {
  let browser: Browser;
  let site: StaticServer;

  beforeAll(async () => {
    buildBundles();
    site = await serveStatic('dist/demo');
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await site?.close();
  });

  it('runs the copy kernel in Chrome and matches the Node run byte for byte', async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    await page.goto(`${site.url}smoke.html`);
    await page.waitForFunction(() => (window as unknown as { __smoke?: unknown }).__smoke !== undefined, null, {
      timeout: 60_000,
    });
    const result = (await page.evaluate(() => (window as unknown as { __smoke: unknown }).__smoke)) as SmokeResult;
    expect(result.error).toBeUndefined();
    expect(errors).toEqual([]);
    expect(result.adapter?.vendor).toBeTruthy();

    const gpu = await testGpu();
    const kernel = new CopyKernel(gpu);
    for (const words of SMOKE_SIZES) {
      const input = smokeInput(words);
      const src = createStorageBuffer(gpu, 'src', input);
      const dst = createStorageBuffer(gpu, 'dst', words * 4);
      kernel.run(src, dst, words);
      const nodeOutput = [...new Uint32Array(await readBuffer(gpu, dst, 0, words * 4))];
      expect(result.outputs?.[String(words)]).toEqual(nodeOutput);
      expect(nodeOutput).toEqual([...input]);
      src.destroy();
      dst.destroy();
    }
  });
});
