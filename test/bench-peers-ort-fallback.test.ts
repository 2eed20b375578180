import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ProtoWriter } from '../src/bench/peers/onnx-model.js';
import { launchChromium } from './helpers/browser.js';

// The peers bench claims its GroupQueryAttention node runs on onnxruntime-web's WebGPU provider because the session
// is created with `session.disable_cpu_ep_fallback = 1` (src/bench/peers/ort.ts). That holds only if the option
// reaches ORT: here a node the WebGPU provider has no kernel for (Unique) gets a session with the fallback allowed
// and none with it disabled, in the same headless Chromium (SwiftShader) and the same ORT build the bench serves.
describe('bench peers: onnxruntime-web honours disable_cpu_ep_fallback', () => {
  it('a CPU-only node fails session creation on the WebGPU provider once the fallback is disabled', async () => {
    const info = (w: ProtoWriter, field: number, name: string) =>
      w.message(field, (v) =>
        v.string(1, name).message(2, (t) => t.message(1, (x) => x.int(1, 1).message(2, (s) => s.message(1, (d) => d.string(2, 'n'))))),
      );
    const model = new ProtoWriter()
      .int(1, 8)
      .message(8, (o) => o.string(1, '').int(2, 17))
      .message(7, (g) => {
        g.message(1, (n) => n.string(1, 'x').string(2, 'y').string(4, 'Unique'));
        info(g.string(2, 'unique'), 11, 'x');
        info(g, 12, 'y');
      })
      .finish();
    const dist = resolve('node_modules/onnxruntime-web/dist');
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      await page.route('http://ort-fallback.localhost/**', (route) => {
        const path = new URL(route.request().url()).pathname;
        if (path === '/') return route.fulfill({ body: '<!doctype html><title>ort</title>', contentType: 'text/html' });
        if (!/^\/ort[\w.-]*\.(mjs|wasm)$/.test(path)) return route.fulfill({ status: 404, body: 'not found' });
        return route.fulfill({ path: `${dist}${path}`, contentType: path.endsWith('.wasm') ? 'application/wasm' : 'text/javascript' });
      });
      await page.goto('http://ort-fallback.localhost/');
      // A string, so that vitest does not rewrite the page's dynamic import.
      const outcomes = (await page.evaluate(`(async () => {
        const ort = await import('http://ort-fallback.localhost/ort.webgpu.min.mjs');
        ort.env.wasm.numThreads = 1;
        const bytes = new Uint8Array(${JSON.stringify([...model])});
        const out = [];
        for (const disabled of ['0', '1']) {
          try {
            const s = await ort.InferenceSession.create(bytes, {
              executionProviders: ['webgpu'],
              extra: { session: { disable_cpu_ep_fallback: disabled } },
            });
            await s.release();
            out.push('created');
          } catch (error) {
            out.push(String(error));
          }
        }
        return out;
      })()`)) as string[];
      expect(outcomes[0]).toBe('created');
      expect(outcomes[1]).toMatch(/fallback to CPU EP has been explicitly disabled/);
    } finally {
      await browser.close();
    }
  }, 60_000);
});
