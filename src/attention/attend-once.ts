import { InvalidArgumentError } from '../errors.js';
import { createStorageBuffer, readBuffer } from '../gpu/buffers.js';
import type { GpuKvStorage } from '../cache/gpu-storage.js';
import type { PagedAttentionKernel } from '../kernels/cache/paged-attention.js';

/** What one query's attention returns: the output and each KV head's probabilities summed over its group. */
export interface AttendResult {
  readonly out: Float32Array;
  readonly probsPerKvHead: Float32Array[];
}

/**
 * Attention of one query (f32 [nHeads][headDim], RoPE applied) against a sequence's cached tokens in `layer`, on
 * the one-pass kernel (the only one that returns probabilities), with its own buffers and one readback. For tests
 * and tools (PagedAttentionBackend.attend); it adds nothing to the statistics.
 */
export async function attendOnce(
  storage: GpuKvStorage,
  kernel: PagedAttentionKernel,
  nHeads: number,
  seqId: number,
  layer: number,
  query: Float32Array,
): Promise<AttendResult> {
  const { gpu, meta } = storage;
  const { headDim, kvHeads } = meta.shape;
  if (query.length !== nHeads * headDim) {
    throw new InvalidArgumentError('query', `expected ${nHeads * headDim} values; got ${query.length}`);
  }
  const slot = meta.slotOf(seqId);
  let longest = 0;
  for (let kv = 0; kv < kvHeads; kv++) longest = Math.max(longest, meta.tokenCount(seqId, layer, kv));
  const stride = Math.max(1, longest);
  const q = createStorageBuffer(gpu, 'kv:attend-q', query);
  const slots = createStorageBuffer(gpu, 'kv:attend-slot', new Uint32Array([slot]));
  const pos = createStorageBuffer(gpu, 'kv:attend-pos', new Uint32Array([0xffff_ffff]));
  const out = createStorageBuffer(gpu, 'kv:attend-out', query.byteLength);
  const probs = createStorageBuffer(gpu, 'kv:attend-probs', nHeads * stride * 4);
  try {
    const encoder = gpu.device.createCommandEncoder({ label: 'kv:attend' });
    kernel.encode(encoder, {
      cache: storage.bindings(layer),
      layer,
      numQueries: 1,
      queries: q,
      querySlots: slots,
      queryPositions: pos,
      out,
      probs,
      probsStride: stride,
    });
    gpu.submit([encoder.finish()]);
    const result = new Float32Array(await readBuffer(gpu, out));
    const p = new Float32Array(await readBuffer(gpu, probs));
    const group = nHeads / kvHeads;
    const probsPerKvHead = Array.from({ length: kvHeads }, (_, kv) => {
      const n = meta.tokenCount(seqId, layer, kv);
      const summed = new Float32Array(n);
      for (let g = 0; g < group; g++) {
        const base = (kv * group + g) * stride;
        for (let t = 0; t < n; t++) summed[t] = (summed[t] ?? 0) + (p[base + t] ?? 0);
      }
      return summed;
    });
    return { out: result, probsPerKvHead };
  } finally {
    for (const buffer of [q, slots, pos, out, probs]) buffer.destroy();
  }
}
