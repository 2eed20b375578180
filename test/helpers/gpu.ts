import { onTestFinished } from 'vitest';
import type { GpuContext } from '../../src/gpu/context.js';
import { mulberry32 } from '../../src/random.js';
import { createNodeGpu } from '../../src/node/gpu.js';

let shared: Promise<GpuContext> | undefined;
const uncaptured: string[] = [];

/**
 * The GPU context of this test file (one per worker process, kept alive until the process exits, so Dawn's
 * instance is never collected under in-flight work). GPU tests never skip: with no adapter this throws
 * NoAdapterError and the test fails, in CI and locally alike. A WebGPU validation error outside an error scope
 * fails the test that called this.
 */
export function testGpu(): Promise<GpuContext> {
  shared ??= createNodeGpu().then((gpu) => {
    gpu.device.onuncapturederror = (event) => uncaptured.push(event.error.message);
    return gpu;
  });
  onTestFinished(async () => {
    const gpu = await shared;
    await gpu?.idle();
    if (uncaptured.length > 0) {
      throw new Error(`uncaptured WebGPU errors:\n${uncaptured.splice(0).join('\n')}`);
    }
  });
  return shared;
}

/** A deterministic PRNG (mulberry32) for test data. */
export function seededRandom(seed: number): () => number {
  return mulberry32(seed);
}
