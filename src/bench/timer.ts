import type { GpuContext } from '../gpu/context.js';

/** Query slots 0 and 1 are the bracket (see {@link PassTimer}); per-pass slots start after them. */
const BRACKET_SLOTS = 2;
/** WebGPU caps a query set at 4096 queries. */
const MAX_QUERIES = 4096;

/**
 * Hands out `timestampWrites` for the compute passes a benchmark case encodes, one pair of queries per pass.
 * Kernels take it as an optional argument of their `encode()`; a kernel that does not (yet) is still timed, by
 * the bracket: an empty pass writing a timestamp before the case and another after it. The harness prefers the
 * per-pass figures (first begin to last end) because an empty pass may be scheduled apart from the work on real
 * GPUs; the bracket is the fallback, and wall time is the fallback when the device has no `timestamp-query`.
 *
 * @example
 * ```ts
 * // inside a BenchCase's encode(): the kernel's pass gets the next pair of queries
 * copy.encode(encoder, src, dst, words, timer.pass());
 * ```
 */
export class PassTimer {
  private used = 0;
  private overflowed = false;

  constructor(
    /** Null when the device has no timestamp-query: pass() then returns undefined. */
    private readonly querySet: GPUQuerySet | null,
  ) {}

  /** Timestamp writes for one compute pass, or undefined (no timestamp-query, or the query set is full). */
  pass(): GPUComputePassTimestampWrites | undefined {
    if (!this.querySet) return undefined;
    const begin = BRACKET_SLOTS + 2 * this.used;
    if (begin + 1 >= this.querySet.count) {
      // The bracket still times the whole case; mixing in a partial per-pass span would under-count it.
      this.overflowed = true;
      return undefined;
    }
    this.used++;
    return { querySet: this.querySet, beginningOfPassWriteIndex: begin, endOfPassWriteIndex: begin + 1 };
  }

  /** Passes that received timestamp writes. */
  get passes(): number {
    return this.used;
  }

  /** True when a pass asked for writes after the query set was full. */
  get overflow(): boolean {
    return this.overflowed;
  }
}

/**
 * How a sample was timed.
 *
 * @example
 * ```ts
 * if (row.timing === 'wall') console.warn(`${row.name}: no timestamp-query, timed by wall clock`);
 * ```
 */
export type TimingMethod = 'pass-timestamps' | 'bracket-timestamps' | 'wall';

/**
 * One timed execution of a case (repeated `repeat` times inside one command buffer).
 *
 * @example
 * ```ts
 * const sample: Sample = await session.sample(8, 1, (encoder, timer) => copy.encode(encoder, src, dst, words, timer.pass()));
 * console.log(sample.ms, sample.wallMs, sample.method); // e.g. 0.12 0.31 'pass-timestamps'
 * ```
 */
export interface Sample {
  /** GPU (or wall, see method) milliseconds of ONE repetition. */
  readonly ms: number;
  /** Wall milliseconds of one repetition: submit to onSubmittedWorkDone, divided by repeat. */
  readonly wallMs: number;
  readonly method: TimingMethod;
}

/**
 * The timestamp machinery of one device: a query set, its resolve and readback buffers. Grows on demand; one
 * instance is reused for every sample of a benchmark run. Falls back to wall time without timestamp-query.
 *
 * @example
 * ```ts
 * const session = new TimestampSession(gpu);
 * const sample = await session.sample(8, 1, (encoder, timer) => copy.encode(encoder, src, dst, words, timer.pass()));
 * sample.ms; // GPU ms of one of the 8 back-to-back copies
 * session.destroy();
 * ```
 */
export class TimestampSession {
  private querySet: GPUQuerySet | null = null;
  private resolve: GPUBuffer | null = null;
  private readback: GPUBuffer | null = null;

  constructor(private readonly gpu: GpuContext) {}

  /** Whether the device can write timestamps at all. */
  get available(): boolean {
    return this.gpu.has('timestamp-query');
  }

  private ensure(queries: number): GPUQuerySet {
    const count = Math.min(MAX_QUERIES, Math.max(BRACKET_SLOTS + 2, queries));
    if (this.querySet && this.querySet.count >= count) return this.querySet;
    this.destroy();
    const device = this.gpu.device;
    this.querySet = device.createQuerySet({ label: 'bench:timestamps', type: 'timestamp', count });
    this.resolve = device.createBuffer({
      label: 'bench:resolve',
      size: count * 8,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    this.readback = device.createBuffer({
      label: 'bench:readback',
      size: count * 8,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    return this.querySet;
  }

  /**
   * Encodes `encodeBody(encoder, timer)` `repeat` times into one command buffer, submits it, waits, and returns
   * the time of one repetition. `passesHint` sizes the query set (passes per repetition, from an earlier sample).
   */
  async sample(
    repeat: number,
    passesHint: number,
    encodeBody: (encoder: GPUCommandEncoder, timer: PassTimer) => void,
  ): Promise<Sample & { passes: number }> {
    const device = this.gpu.device;
    const encoder = device.createCommandEncoder({ label: 'bench' });
    const querySet = this.available ? this.ensure(BRACKET_SLOTS + 2 * Math.max(1, passesHint) * repeat) : null;
    const timer = new PassTimer(querySet);
    if (querySet) {
      encoder.beginComputePass({ label: 'bench:begin', timestampWrites: { querySet, beginningOfPassWriteIndex: 0 } }).end();
    }
    for (let r = 0; r < repeat; r++) encodeBody(encoder, timer);
    const slots = BRACKET_SLOTS + 2 * timer.passes;
    if (querySet && this.resolve && this.readback) {
      encoder.beginComputePass({ label: 'bench:end', timestampWrites: { querySet, endOfPassWriteIndex: 1 } }).end();
      encoder.resolveQuerySet(querySet, 0, slots, this.resolve, 0);
      encoder.copyBufferToBuffer(this.resolve, 0, this.readback, 0, slots * 8);
    }
    const start = performance.now();
    this.gpu.submit([encoder.finish()]);
    await this.gpu.idle();
    const wallMs = (performance.now() - start) / repeat;
    const passes = Math.round(timer.passes / repeat);
    if (!querySet || !this.readback) return { ms: wallMs, wallMs, method: 'wall', passes };
    await this.readback.mapAsync(GPUMapMode.READ, 0, slots * 8);
    const stamps = new BigInt64Array(this.readback.getMappedRange(0, slots * 8).slice(0));
    this.readback.unmap();
    return { ...spanOf(stamps, timer, repeat), wallMs, passes };
  }

  /** Destroys the query set and buffers (a later sample creates them again). */
  destroy(): void {
    this.querySet?.destroy();
    this.resolve?.destroy();
    this.readback?.destroy();
    this.querySet = null;
    this.resolve = null;
    this.readback = null;
  }
}

function spanOf(stamps: BigInt64Array, timer: PassTimer, repeat: number): { ms: number; method: TimingMethod } {
  const bracket = Number((stamps[1] ?? 0n) - (stamps[0] ?? 0n));
  if (timer.passes > 0 && !timer.overflow) {
    let first = stamps[BRACKET_SLOTS] ?? 0n;
    let last = stamps[BRACKET_SLOTS + 1] ?? 0n;
    for (let i = 0; i < timer.passes; i++) {
      const begin = stamps[BRACKET_SLOTS + 2 * i] ?? first;
      const end = stamps[BRACKET_SLOTS + 2 * i + 1] ?? last;
      if (begin < first) first = begin;
      if (end > last) last = end;
    }
    // Timestamps are in nanoseconds; a span can come out negative only if a driver resets its clock mid-run.
    return { ms: Math.max(0, Number(last - first)) / 1e6 / repeat, method: 'pass-timestamps' };
  }
  return { ms: Math.max(0, bracket) / 1e6 / repeat, method: 'bracket-timestamps' };
}
