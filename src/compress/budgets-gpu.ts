/**
 * {@link allocateBudgets} on the GPU: the same per-(layer, head) counts, with the scores left on the GPU. Only
 * small results come back: per joint segment a threshold {key, keepEqual}, per head the number of its scores
 * above and equal to it. Ties at the threshold are handed out on the host in the reference's order (lower layer,
 * then lower head; within a head, equal scores are consecutive ranks).
 */
import { InvalidArgumentError } from '../errors.js';
import type { GpuContext } from '../gpu/context.js';
import { ScratchBuffers } from '../gpu/scratch-buffers.js';
import { TopKSelectKernel } from '../kernels/compress/select.js';
import { allocateBudgets, type BudgetOptions } from './budgets.js';

/**
 * Options of {@link allocateBudgetsGpu}: the reference's options plus where each head's scores are.
 */
export interface GpuBudgetOptions extends BudgetOptions {
  /** f32 [row][stride] scores (+Inf = protected). NaN is not checked on the GPU: policies must not emit it. */
  readonly scores: GPUBuffer;
  /** Scores per row in the buffer (maxTokensPerHead). */
  readonly stride: number;
  /** rows[layer][head]: the row of that head's scores, e.g. (layer × seqSlots + slot) × kvHeads + head. */
  readonly rows: readonly (readonly number[])[];
  /** lengths[layer][head]: that head's token count (the host's copy of the context lengths). */
  readonly lengths: readonly (readonly number[])[];
  /** A kernel to reuse (its pipelines are cached per device either way). */
  readonly kernel?: TopKSelectKernel;
  /** Scratch to reuse across calls (the compressor's); absent = buffers of this call, destroyed at its end. */
  readonly scratch?: ScratchBuffers;
  /**
   * Work to run first (the scoring passes): the selection is recorded after it and the call submits it, so
   * scoring, selection and the readback are one submit and one wait. Submitted even when no GPU pass is needed.
   */
  readonly encoder?: GPUCommandEncoder;
}

function checkShape(options: GpuBudgetOptions): void {
  const { rows, lengths, stride } = options;
  if (!Number.isInteger(stride) || stride <= 0) {
    throw new InvalidArgumentError('stride', `must be a positive integer; got ${stride}`);
  }
  if (rows.length !== lengths.length) {
    throw new InvalidArgumentError('rows', `has ${rows.length} layers but lengths has ${lengths.length}`);
  }
  const maxRow = Math.floor(options.scores.size / 4 / stride) - 1;
  rows.forEach((layer, l) => {
    const lens = lengths[l] ?? [];
    if (layer.length !== lens.length) {
      throw new InvalidArgumentError(`rows[${l}]`, `has ${layer.length} heads but lengths[${l}] has ${lens.length}`);
    }
    layer.forEach((row, h) => {
      const n = lens[h] ?? 0;
      if (!Number.isInteger(row) || row < 0 || row > maxRow) {
        throw new InvalidArgumentError(`rows[${l}][${h}]`, `${row} is not a row of the scores buffer (0..${maxRow})`);
      }
      if (!Number.isInteger(n) || n < 0 || n > stride) {
        throw new InvalidArgumentError(`lengths[${l}][${h}]`, `must be an integer in [0, ${stride}]; got ${n}`);
      }
    });
  });
}

/** Heads in (layer, head) order: the reference's tie order, and the order of the members buffer. */
interface Member {
  readonly layer: number;
  readonly head: number;
  readonly row: number;
  readonly len: number;
  /** Own top tokens kept before the joint pass (adakv's safeguard), already capped by len. */
  readonly safe: number;
}

/**
 * Runs joint selections (one per segment, over its members with their `safe` top tokens left out) and returns
 * per-member counts: safe + how many of the member's remaining tokens the segment picked.
 */
async function jointCounts(
  gpu: GpuContext,
  kernel: TopKSelectKernel,
  options: GpuBudgetOptions,
  members: readonly Member[],
  segments: readonly { first: number; count: number; k: number }[],
): Promise<Uint32Array> {
  const useExclusion = members.some((m) => m.safe > 0);
  const arena = options.scratch ?? new ScratchBuffers(gpu, 'budgets');
  try {
    const buffers = {
      members: arena.upload('budgets:members', Uint32Array.from(members.flatMap((m) => [m.row, m.len]))),
      segments: arena.upload('budgets:segments', Uint32Array.from(segments.flatMap((s) => [s.first, s.count, s.k]))),
      exclusionK: useExclusion ? arena.upload('budgets:safe', Uint32Array.from(members.flatMap((m, i) => [i, 1, m.safe]))) : null,
      exclusions: useExclusion ? arena.get('budgets:exclusions', members.length * 8) : null,
      thresholds: arena.get('budgets:thresholds', segments.length * 8),
      counts: arena.get('budgets:counts', members.length * 8),
    };
    const encoder = options.encoder ?? gpu.device.createCommandEncoder({ label: 'budgets' });
    if (buffers.exclusionK && buffers.exclusions) {
      // Each head's safeguard share as a one-member segment; its threshold says which tokens to leave out.
      kernel.encodeSegmentThresholds(encoder, {
        scores: options.scores,
        stride: options.stride,
        numSegments: members.length,
        segments: buffers.exclusionK,
        members: buffers.members,
        numMembers: members.length,
        thresholds: buffers.exclusions,
      });
    }
    kernel.encodeSegmentThresholds(encoder, {
      scores: options.scores,
      stride: options.stride,
      numSegments: segments.length,
      segments: buffers.segments,
      members: buffers.members,
      numMembers: members.length,
      ...(buffers.exclusions ? { exclusions: buffers.exclusions } : {}),
      thresholds: buffers.thresholds,
      memberCounts: buffers.counts,
    });
    // One staging buffer, one map: thresholds and counts come back together.
    const [thresholdBytes, countBytes] = await arena.readBack(encoder, [
      { buffer: buffers.thresholds, bytes: segments.length * 8 },
      { buffer: buffers.counts, bytes: members.length * 8 },
    ]);
    const thresholds = new Uint32Array(thresholdBytes ?? new ArrayBuffer(0));
    const counts = new Uint32Array(countBytes ?? new ArrayBuffer(0));
    const result = new Uint32Array(members.length);
    segments.forEach((segment, s) => {
      let equalLeft = thresholds[2 * s + 1] ?? 0;
      for (let i = segment.first; i < segment.first + segment.count; i++) {
        const m = members[i];
        if (!m) continue;
        const greater = counts[2 * i] ?? 0;
        const equal = counts[2 * i + 1] ?? 0;
        // Ranks [0, greater) score above T, [greater, greater + equal) equal it; the joint pass only saw ranks ≥ safe.
        const candidatesAbove = Math.max(0, greater - m.safe);
        const candidatesEqual = Math.max(0, greater + equal - Math.max(greater, m.safe));
        const take = Math.min(candidatesEqual, equalLeft);
        equalLeft -= take;
        result[i] = m.safe + candidatesAbove + take;
      }
    });
    return result;
  } finally {
    if (!options.scratch) arena.destroy();
  }
}

/**
 * Keep counts per (layer, KV head), identical to {@link allocateBudgets} on the same scores, for every mode.
 * `uniform` and `pyramid` depend only on the lengths and run on the host; `adakv` (a joint selection per layer
 * after each head's safeguard share) and `global` (one joint selection over all heads) radix-select on the GPU.
 * Only thresholds and per-head counts are read back.
 *
 * @throws InvalidArgumentError for the reference's bad options, or rows/lengths that do not fit the buffer.
 * @example
 * ```ts
 * const counts = await allocateBudgetsGpu(gpu, { mode: 'adakv', budget: 64, scores, stride, rows, lengths });
 * counts[layer][head]; // tokens that head keeps; then per-row top-k with k = these counts
 * ```
 */
export async function allocateBudgetsGpu(gpu: GpuContext, options: GpuBudgetOptions): Promise<Uint32Array[]> {
  // The reference validates the options; with empty score rows that is all it does.
  allocateBudgets([[]], options);
  checkShape(options);
  const { lengths, rows, budget, mode } = options;
  const maxLength = Math.max(0, ...lengths.flat());
  if (mode === 'uniform' || mode === 'pyramid' || budget >= maxLength) {
    // Counts depend only on lengths: run the reference itself on score rows of the right lengths (one shared
    // zero array), so the two can never disagree. Its NaN scan is O(tokens) on the CPU, cheap next to a GPU pass.
    if (options.encoder) gpu.submit([options.encoder.finish()]);
    const zeros = new Float32Array(maxLength);
    return allocateBudgets(
      lengths.map((layer) => layer.map((n) => zeros.subarray(0, n))),
      options,
    );
  }
  const kernel = options.kernel ?? new TopKSelectKernel(gpu);
  const safeShare = mode === 'adakv' ? Math.floor((options.safeguard ?? 0.2) * budget) : 0;
  const members: Member[] = [];
  const segments: { first: number; count: number; k: number }[] = [];
  lengths.forEach((layer, l) => {
    const first = members.length;
    let used = 0;
    layer.forEach((len, h) => {
      const safe = Math.min(safeShare, len);
      used += safe;
      members.push({ layer: l, head: h, row: rows[l]?.[h] ?? 0, len, safe });
    });
    if (mode === 'adakv') {
      segments.push({ first, count: layer.length, k: Math.max(0, Math.floor(layer.length * budget) - used) });
    }
  });
  if (mode === 'global') segments.push({ first: 0, count: members.length, k: Math.floor(members.length * budget) });
  const counts = lengths.map((layer) => new Uint32Array(layer.length));
  const live = segments.filter((s) => s.count > 0);
  if (members.length === 0 || live.length === 0) {
    if (options.encoder) gpu.submit([options.encoder.finish()]);
    return counts;
  }
  let flat: Uint32Array;
  try {
    flat = await jointCounts(gpu, kernel, options, members, live);
  } finally {
    // A kernel made here holds a scratch buffer; the readback above has waited for the GPU.
    if (!options.kernel) kernel.destroy();
  }
  members.forEach((m, i) => {
    const row = counts[m.layer];
    if (row) row[m.head] = flat[i] ?? 0;
  });
  return counts;
}
