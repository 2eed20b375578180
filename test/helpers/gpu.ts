import { afterAll } from 'vitest';
import type { GpuContext } from '../../src/gpu/context.js';
import { createNodeGpu } from '../../src/node/gpu.js';

let shared: Promise<GpuContext> | undefined;

/**
 * The GPU context of this test file, created once and destroyed after the file. GPU tests never skip: with no
 * adapter this throws NoAdapterError and the test fails, in CI and locally alike.
 */
export function testGpu(): Promise<GpuContext> {
  if (!shared) {
    shared = createNodeGpu();
    afterAll(async () => {
      const gpu = await shared;
      shared = undefined;
      await gpu?.destroy();
    });
  }
  return shared;
}

/** A deterministic PRNG (mulberry32) for test data. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
