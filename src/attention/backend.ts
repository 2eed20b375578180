/**
 * Attention of one layer for the token at `pos`: given its roped query [nHeads·headSize] and its roped key and
 * value [kvDim], returns the attention output [nHeads·headSize] (before `wo`). Plug in a compressed cache here.
 *
 * @example
 * ```ts
 * const hook: AttentionHook = (layer, pos, q, k, v) => { cache.append(layer, k, v); return cache.attend(layer, q); };
 * new ReferenceLlama(checkpoint, { attention: hook });
 * ```
 */
export type AttentionHook = (layer: number, pos: number, q: Float32Array, k: Float32Array, v: Float32Array) => Float32Array;

/**
 * One step of one sequence: the cache slots reserved for `numTokens` new tokens and their positions.
 *
 * @example
 * ```ts
 * const step = backend.beginStep(seqId, tokens.length);
 * step.positions; // Uint32Array of numTokens positions
 * ```
 */
export interface KvStep {
  readonly seqId: number;
  readonly numTokens: number;
  readonly positions: Uint32Array;
}

/**
 * The buffers of one layer of a step: the new tokens' roped K and raw V, f32 `[n][kvHeads][headDim]`, their roped
 * queries and the attention output, f32 `[n][nHeads][headDim]`.
 *
 * @example
 * ```ts
 * const io: LayerIo = { keys, values, queries, out };
 * backend.encodeLayer(encoder, step, layer, io);
 * ```
 */
export interface LayerIo {
  readonly keys: GPUBuffer;
  readonly values: GPUBuffer;
  readonly queries: GPUBuffer;
  readonly out: GPUBuffer;
  /**
   * A compute pass the caller keeps open: a backend whose `recordsIntoPass` is true records the layer's dispatches
   * into it (and nothing outside it); give it to no other backend.
   */
  readonly pass?: GPUComputePassEncoder;
}

/**
 * What the GPU forward pass needs from a KV cache: slots for new tokens, and per layer an encoded append +
 * attention over the cache. Implemented by the paged cache (src/cache/paged-kv-cache.ts) and by test backends.
 *
 * @example
 * ```ts
 * const step = backend.beginStep(seqId, n);
 * for (let layer = 0; layer < layers; layer++) backend.encodeLayer(encoder, step, layer, { keys, values, queries, out });
 * gpu.submit([encoder.finish()]);
 * backend.endStep(step);
 * ```
 */
export interface GpuAttentionBackend {
  /** Reserves cache slots for numTokens new tokens of seqId in every layer and KV head; throws OutOfBlocksError. */
  beginStep(seqId: number, numTokens: number): KvStep;
  /** Encodes: write this layer's new roped K and raw V (f32 [n][kvHeads][headDim]) into the cache, then paged attention of the n roped queries (f32 [n][nHeads][headDim], causal by position) into out (same shape). */
  encodeLayer(
    encoder: GPUCommandEncoder,
    step: KvStep,
    layer: number,
    io: LayerIo,
  ): void;
  /**
   * True when encodeLayer and encodeLayerBatch record into `io.pass` (kernels only, no buffer copies), so the
   * caller's forward can stay one compute pass; otherwise they get the encoder with no pass open.
   */
  readonly recordsIntoPass?: boolean;
  /** Called after the step's command buffer was submitted. */
  endStep(step: KvStep): void;
  /**
   * Optional batched decode: one layer of one token of each of `steps` (distinct sequences), the rows of `io` in
   * the order of `steps`; writes every token's K/V and attends all of them in one dispatch. Returns false having
   * encoded nothing when it cannot (the caller then calls encodeLayer per step).
   */
  encodeLayerBatch?(encoder: GPUCommandEncoder, steps: readonly KvStep[], layer: number, io: LayerIo): boolean;
}
