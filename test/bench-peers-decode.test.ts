import { describe, expect, it } from 'vitest';
import { formatPeersMarkdown, peersConfig, runPeers } from '../src/bench/peers/index.js';
import { DECODE_TOLERANCE, withDecodeRatios } from '../src/bench/peers/decode-contract.js';
import { testGpu } from './helpers/gpu.js';

// The decode-attention peers of `bench --only peers`, numerically: in headless Chromium (SwiftShader), kvcompact's
// paged kernel, onnxruntime-web's GroupQueryAttention on its WebGPU provider (session created with the CPU fallback
// disabled, output a GPU buffer; past and present KV in one shared buffer, which the run checks ORT appended to in
// place, and with separate present outputs) and on its wasm provider, and in Node kvcompact's paged and flash-decode kernels,
// all within DECODE_TOLERANCE (1e-4 absolute) of the TS reference at 256 tokens. Speed is not asserted. One
// browser start and one check run per engine: about 20 s on 2 cores.
describe('bench peers: decode attention', () => {
  it('peersConfig: decode contexts full, quick and KVCOMPACT_PEERS_DECODE_CONTEXTS', () => {
    expect(peersConfig(false, undefined, undefined).decodeContexts).toEqual([1024, 4096]);
    expect(peersConfig(true, undefined, undefined).decodeContexts).toEqual([1024]);
    expect(peersConfig(false, undefined, '1024, 16384').decodeContexts).toEqual([1024, 16384]);
    expect(() => peersConfig(false, undefined, '1000')).toThrow(/multiples of 16/);
  });

  it('ratios are ms ÷ the Chromium paged kernel of the same case', () => {
    const row = { samples: [], adapter: 'a' } as const;
    const rows = withDecodeRatios([
      { ...row, engine: 'kvcompact-paged-attention', case: 'decode/f32/1K', ms: 10, host: 'chromium' },
      { ...row, engine: 'kvcompact-paged-attention', case: 'decode/f32/1K', ms: 5, host: 'node' },
      { ...row, engine: 'onnxruntime-web-webgpu', case: 'decode/f32/1K', ms: 30, host: 'chromium' },
      { ...row, engine: 'onnxruntime-web-webgpu', case: 'decode/f32/4K', ms: 30, host: 'chromium' },
    ]);
    expect(rows.map((r) => r.ratio)).toEqual([1, 0.5, 3, 0]);
  });

  it('kvcompact, onnxruntime-web (WebGPU and wasm providers) and the TS reference agree at 256 tokens', async () => {
    const gpu = await testGpu();
    const report = await runPeers({ sizes: [], warmup: 0, runs: 0, checkOnly: true, decodeContexts: [256] }, { nodeGpu: gpu });
    const decode = report.decode;
    expect(decode).toBeDefined();
    if (!decode) return;
    const seen = decode.checks.map((c) => `${c.case}/${c.engine}/${c.host}`).sort();
    expect(seen).toEqual([
      'decode/f16/256/kvcompact-flash-decode/chromium',
      'decode/f16/256/kvcompact-flash-decode/node',
      'decode/f16/256/kvcompact-paged-attention/chromium',
      'decode/f16/256/kvcompact-paged-attention/node',
      'decode/f32/256/kvcompact-flash-decode/chromium',
      'decode/f32/256/kvcompact-flash-decode/node',
      'decode/f32/256/kvcompact-paged-attention/chromium',
      'decode/f32/256/kvcompact-paged-attention/node',
      'decode/f32/256/onnxruntime-web-wasm/chromium',
      'decode/f32/256/onnxruntime-web-webgpu-concat/chromium',
      'decode/f32/256/onnxruntime-web-webgpu/chromium',
    ]);
    for (const check of decode.checks) {
      expect(check.maxAbsError, `${check.case} ${check.engine} ${check.host}`).toBeLessThanOrEqual(DECODE_TOLERANCE);
      expect(check.pass).toBe(true);
    }
    // Chromium's WebGPU adapter here is SwiftShader without shader-f16; each skip names its reason. The
    // split-context kernel runs there too: it fits Chrome's 10 storage buffers per stage.
    const reasons = decode.skipped.map((s) => `${s.engine}/${s.case}/${s.host}: ${s.reason}`);
    for (const reason of reasons) expect(reason).toMatch(/storage buffers per stage|shader-f16/);
    expect(decode.ort.version).toBe('1.30.0');
    expect(decode.ort.webgpuAdapter).toMatch(/\w/);
    expect(report.rows).toEqual([]);
    expect(formatPeersMarkdown(report)).toContain('onnxruntime-web 1.30.0');
  }, 60_000);
});
