import { promisify } from 'node:util';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { InvalidArgumentError } from '../src/errors.js';
import { dawnPolling, isDawnPoll, pacedSetImmediate, parseDawnPolling, setDawnPolling } from '../src/node/dawn-polling.js';
import { testGpu } from './helpers/gpu.js';

describe('paced polling (fake clock)', () => {
  function harness(spinMs: number) {
    let clock = 0;
    const log: string[] = [];
    const poll = (): void => {};
    const schedule = pacedSetImmediate(
      { now: () => clock, immediate: () => log.push('immediate'), timer: () => log.push('timer') },
      spinMs,
      (callback) => callback === poll,
    );
    return { poll, schedule, log, at: (ms: number) => (clock = ms) };
  }

  it('spins for spinMs of a wait, then polls on the timer, and a pause starts a new wait', () => {
    const h = harness(1);
    for (const t of [100, 100.4, 100.9]) {
      h.at(t);
      h.schedule(h.poll);
    }
    for (const t of [101, 102.1, 103.2]) {
      h.at(t);
      h.schedule(h.poll);
    }
    h.at(200); // a new wait
    h.schedule(h.poll);
    expect(h.log).toEqual(['immediate', 'immediate', 'immediate', 'timer', 'timer', 'timer', 'immediate']);
  });

  it('never delays other callbacks', () => {
    const h = harness(0);
    h.at(5);
    h.schedule(() => {});
    h.schedule(h.poll);
    expect(h.log).toEqual(['immediate', 'timer']);
  });
});

describe('Dawn polling choice', () => {
  it('parses the choices and names the source of a bad one', () => {
    expect(parseDawnPolling(undefined, 'x')).toBe('auto');
    expect(parseDawnPolling('', 'x')).toBe('auto');
    expect(parseDawnPolling('paced', 'x')).toBe('paced');
    expect(() => parseDawnPolling('sleep', 'KVCOMPACT_DAWN_POLLING')).toThrow(InvalidArgumentError);
    expect(() => parseDawnPolling('sleep', 'KVCOMPACT_DAWN_POLLING')).toThrow(/KVCOMPACT_DAWN_POLLING: must be auto, spin or paced; got "sleep"/);
    expect(() => setDawnPolling('paced', -1)).toThrow(InvalidArgumentError);
  });

  it('tells JS callbacks from native anonymous ones', () => {
    expect(isDawnPoll(() => {})).toBe(false);
    expect(isDawnPoll(function named() {})).toBe(false);
    expect(isDawnPoll(function () {})).toBe(false); // anonymous, with a prototype: its source tells it apart
    expect(isDawnPoll(function () {}.bind(null))).toBe(false);
    expect(isDawnPoll(Math.max)).toBe(false);
    expect(isDawnPoll('function () { [native code] }')).toBe(false);
  });
});

describe('Dawn polling on the device', () => {
  const realImmediate = globalThis.setImmediate;
  const realTimeout = globalThis.setTimeout;
  afterEach(() => {
    globalThis.setImmediate = realImmediate;
    globalThis.setTimeout = realTimeout;
  });

  // A kernel that runs for a while on any adapter: one invocation, a long dependent loop.
  async function longWait(): Promise<number> {
    const gpu = await testGpu();
    const device = gpu.device;
    const module = device.createShaderModule({
      code: `@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(1) fn main() {
  var x = out[0];
  for (var i = 0u; i < 10000000u; i++) { x = x * 0.999999 + 1.0; }
  out[0] = x;
}`,
    });
    const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
    const buffer = device.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE });
    const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] });
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(1);
    pass.end();
    const start = performance.now();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
    const ms = performance.now() - start;
    buffer.destroy();
    return ms;
  }

  // Installs counting setImmediate / setTimeout wrappers (Dawn's polls only are counted); restore() takes them out.
  function pollCounters() {
    const counts = { immediate: 0, timer: 0 };
    const immediate = globalThis.setImmediate;
    const timeout = globalThis.setTimeout;
    const counting = ((callback: (...a: unknown[]) => void, ...args: unknown[]) => {
      if (isDawnPoll(callback)) counts.immediate++;
      return immediate(callback, ...args);
    }) as typeof setImmediate;
    (counting as unknown as Record<symbol, unknown>)[promisify.custom] = (immediate as unknown as Record<symbol, unknown>)[promisify.custom];
    globalThis.setImmediate = counting;
    globalThis.setTimeout = ((callback: () => void, ms?: number) => {
      if (isDawnPoll(callback)) counts.timer++;
      return timeout(callback, ms);
    }) as typeof setTimeout;
    const restore = (): void => {
      globalThis.setImmediate = immediate;
      globalThis.setTimeout = timeout;
    };
    return { counts, counting, restore };
  }

  // Counts Dawn's polls that go through setImmediate and through setTimeout while `run` runs.
  async function countPolls(run: () => Promise<number>): Promise<{ immediate: number; timer: number; ms: number }> {
    const { counts, restore } = pollCounters();
    try {
      const ms = await run();
      return { ...counts, ms };
    } finally {
      restore();
    }
  }

  it('is paced on the software adapter by default (or as KVCOMPACT_DAWN_POLLING says)', async () => {
    const gpu = await testGpu();
    const asked = parseDawnPolling(process.env.KVCOMPACT_DAWN_POLLING, 'KVCOMPACT_DAWN_POLLING');
    const expected = asked === 'auto' ? (gpu.adapter.isFallbackAdapter ? 'paced' : 'spin') : asked;
    expect(dawnPolling()).toBe(expected);
  });

  it('recognises the binding’s own poll', async () => {
    await testGpu();
    const { immediate, timer } = await countPolls(longWait);
    expect(immediate + timer).toBeGreaterThan(0);
  });

  it('paced: a wait still ends while the test fakes setTimeout (the pacing took the real one)', async () => {
    await testGpu();
    const before = dawnPolling();
    setDawnPolling('paced', 0);
    // If the polls went to the faked timer the wait would never end: a real timer fails the test instead.
    const realTimer = globalThis.setTimeout;
    const stuck = new Promise<never>((_, reject) => realTimer(() => reject(new Error('the GPU wait never ended under fake timers')), 10_000));
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      expect(await Promise.race([longWait(), stuck])).toBeGreaterThan(0);
    } finally {
      // A poll left with the fake timer would be Dawn's only one, and every later wait would hang: run it.
      vi.runOnlyPendingTimers();
      vi.useRealTimers();
      setDawnPolling('spin');
      if (before === 'paced') setDawnPolling('paced');
    }
  });

  it('paced: a long wait polls on the timer, promisify(setImmediate) still works, and spin puts it back', async () => {
    await testGpu();
    const before = dawnPolling();
    try {
      setDawnPolling('spin');
      // The counting wrappers are installed first, so under 'paced' they see only what pacing lets through.
      const spinning = await countPolls(longWait);
      expect(spinning.timer).toBe(0);
      expect(spinning.immediate).toBeGreaterThan(0);

      const { counts, counting } = pollCounters(); // put back by afterEach
      setDawnPolling('paced', 1);
      expect(dawnPolling()).toBe('paced');
      const ms = await longWait();
      expect(ms).toBeGreaterThan(5); // the kernel is long enough for the pacing to start
      expect(counts.timer).toBeGreaterThan(0);
      // Other uses of setImmediate are untouched.
      expect(await promisify(setImmediate)('value')).toBe('value');
      const args = await new Promise<unknown[]>((resolve) => setImmediate((...a: unknown[]) => resolve(a), 1, 'two'));
      expect(args).toEqual([1, 'two']);
      setDawnPolling('spin');
      expect(dawnPolling()).toBe('spin');
      expect(globalThis.setImmediate).toBe(counting);
    } finally {
      globalThis.setImmediate = realImmediate;
      globalThis.setTimeout = realTimeout;
      setDawnPolling('spin');
      if (before === 'paced') setDawnPolling('paced');
    }
  });
});
