import { describe, expect, it } from 'vitest';
import { PEERS_TEST_SIZE, peersConfig, runPeers } from '../src/bench/peers/index.js';

// The three implementations of the peers benchmark (kvcompact WebGPU, gpu.js on WebGL2, the TS reference) must
// compute the same SnapKV scores and KIVI codes in Chromium; speed is not asserted. Tolerances are the page's
// (src/bench/peers/checks.ts): scores within 1e-4 × the largest reference score with identical protected tokens;
// f16 parameters within 1 ulp (≤ 0.1% not bit-equal), codes within ±1 (≤ 0.1% differing).
describe('bench peers page', () => {
  it('peersConfig: full, quick and KVCOMPACT_PEERS_SIZES', () => {
    expect(peersConfig(true, undefined).sizes).toEqual([PEERS_TEST_SIZE]);
    expect(peersConfig(false, undefined).sizes).toEqual([PEERS_TEST_SIZE, 1024]);
    expect(peersConfig(false, '1024, 4096').sizes).toEqual([1024, 4096]);
    expect(() => peersConfig(false, '1000')).toThrow(/multiples of 32/);
  });

  it(`kvcompact, gpu.js and the TS reference agree at ${PEERS_TEST_SIZE} tokens`, async () => {
    const report = await runPeers({ sizes: [PEERS_TEST_SIZE], warmup: 0, runs: 0, checkOnly: true });
    expect(report.webgl.gpujsKernel).toBe('WebGL2Kernel');
    expect(report.adapter.vendor).toBeTruthy();
    const seen = report.checks.map((c) => `${c.op}/${c.impl}`).sort();
    expect(seen).toEqual([
      'kivi-quantize/gpu.js-webgl2',
      'kivi-quantize/kvcompact-webgpu',
      'snapkv-score/gpu.js-webgl2',
      'snapkv-score/kvcompact-webgpu',
    ]);
    for (const check of report.checks) {
      expect(check.pass, `${check.op}/${check.impl}: ${JSON.stringify(check.metrics)}`).toBe(true);
    }
    const scores = report.checks.filter((c) => c.op === 'snapkv-score');
    for (const check of scores) expect(check.metrics.protectedMismatches).toBe(0);
  }, 90_000);
});
