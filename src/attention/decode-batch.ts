import type { GpuContext } from '../gpu/context.js';

/** What one sequence of a batched decode step contributes: its slot, its token's position and pool slots. */
export interface DecodeBatchMember {
  readonly slot: number;
  /** The one new token's position. */
  readonly position: number;
  /** u32 [layers][1][kvHeads]: the pool slots of the token's K/V (AppendPlan.destSlots of a one-token step). */
  readonly destSlots: Uint32Array;
  /** The sequence's longest head, counting the new token. */
  readonly longestHead: number;
}

/**
 * The kernel inputs of a batched decode step, one row per sequence in the batch's order: what the K/V append and
 * the split-context attention take for n queries of n different sequences.
 */
export interface DecodeBatchBuffers {
  /** u32 [layers][n][kvHeads]. */
  readonly destSlots: GPUBuffer;
  /** u32 [n]: each token's position. */
  readonly positions: GPUBuffer;
  /** u32 [n]: each query's sequence slot. */
  readonly querySlots: GPUBuffer;
  /** u32 [n][3]: (slot, query, 1) per sequence for the statistics pass. */
  readonly segments: GPUBuffer;
  /** The longest head over the batch: the attention's partitions cover it. */
  readonly maxContext: number;
  readonly size: number;
}

/** Packs the members' rows into the layouts of {@link DecodeBatchBuffers} (host arrays; exported for tests). */
export function packDecodeBatch(members: readonly DecodeBatchMember[], layers: number, kvHeads: number): {
  destSlots: Uint32Array;
  positions: Uint32Array;
  querySlots: Uint32Array;
  segments: Uint32Array;
  maxContext: number;
} {
  const n = members.length;
  const destSlots = new Uint32Array(layers * n * kvHeads);
  members.forEach((member, b) => {
    for (let layer = 0; layer < layers; layer++) {
      destSlots.set(member.destSlots.subarray(layer * kvHeads, (layer + 1) * kvHeads), (layer * n + b) * kvHeads);
    }
  });
  return {
    destSlots,
    positions: Uint32Array.from(members, (m) => m.position),
    querySlots: Uint32Array.from(members, (m) => m.slot),
    segments: Uint32Array.from(members.flatMap((m, b) => [m.slot, b, 1])),
    maxContext: Math.max(1, ...members.map((m) => m.longestHead)),
  };
}

/**
 * The buffers of batched decode steps in flight: built when the first layer of a batch is encoded, reused by its
 * other layers (the caller passes the same steps array each layer), released to the buffer pool when the first of
 * its steps ends (after the submit).
 *
 * @example
 * ```ts
 * const batches = new DecodeBatches<StepState>(gpu, layers, kvHeads);
 * const buffers = batches.buffers(steps, (step) => ({ slot, position, destSlots, longestHead }));
 * batches.release(step); // in endStep
 * ```
 */
export class DecodeBatches<Step extends object> {
  private readonly byStep = new WeakMap<Step, { readonly steps: readonly Step[]; buffers: DecodeBatchBuffers | null }>();

  constructor(
    private readonly gpu: GpuContext,
    private readonly layers: number,
    private readonly kvHeads: number,
  ) {}

  /** The batch's buffers, built on first use for these exact steps (in this order). */
  buffers(steps: readonly Step[], member: (step: Step) => DecodeBatchMember): DecodeBatchBuffers {
    const first = steps[0];
    const known = first ? this.byStep.get(first) : undefined;
    if (known?.buffers && known.steps.length === steps.length && known.steps.every((s, i) => s === steps[i])) return known.buffers;
    const packed = packDecodeBatch(steps.map(member), this.layers, this.kvHeads);
    const buffers: DecodeBatchBuffers = {
      destSlots: this.gpu.buffers.upload(packed.destSlots, 'kv:batch-dest-slots'),
      positions: this.gpu.buffers.upload(packed.positions, 'kv:batch-positions'),
      querySlots: this.gpu.buffers.upload(packed.querySlots, 'kv:batch-query-slots'),
      segments: this.gpu.buffers.upload(packed.segments, 'kv:batch-segments'),
      maxContext: packed.maxContext,
      size: steps.length,
    };
    const entry = { steps: [...steps], buffers };
    for (const step of steps) {
      const previous = this.byStep.get(step);
      if (previous) this.drop(previous);
      this.byStep.set(step, entry);
    }
    return buffers;
  }

  /** Releases the buffers of the batch `step` belongs to (no-op for a step of no batch). */
  release(step: Step): void {
    const entry = this.byStep.get(step);
    if (!entry) return;
    this.drop(entry);
    for (const member of entry.steps) this.byStep.delete(member);
  }

  private drop(entry: { buffers: DecodeBatchBuffers | null }): void {
    const buffers = entry.buffers;
    entry.buffers = null;
    if (!buffers) return;
    for (const buffer of [buffers.destSlots, buffers.positions, buffers.querySlots, buffers.segments]) this.gpu.buffers.release(buffer);
  }
}
