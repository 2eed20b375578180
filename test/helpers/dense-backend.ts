import { InvalidArgumentError, OutOfBlocksError, UnknownSequenceError } from '../../src/errors.js';
import { createStorageBuffer } from '../../src/gpu/buffers.js';
import type { GpuContext } from '../../src/gpu/context.js';
import { encodeDispatch, kernelPipeline, type KernelSpec } from '../../src/gpu/kernel.js';
import { UniformLayout } from '../../src/gpu/uniforms.js';
import type { GpuAttentionBackend, KvStep, LayerIo } from '../../src/attention/backend.js';
import denseBody from './dense_attention.wgsl';

const PARAMS = new UniformLayout('DenseAttentionParams', [
  { name: 'num_queries', type: 'u32' },
  { name: 'first_position', type: 'u32' },
  { name: 'layer', type: 'u32' },
  { name: 'max_tokens', type: 'u32' },
  { name: 'scale', type: 'f32' },
]);

interface DenseSequence {
  readonly keys: GPUBuffer;
  readonly values: GPUBuffer;
  length: number;
}

/**
 * A dense, uncompressed KV cache behind {@link GpuAttentionBackend}, for testing GpuLlama without the paged cache:
 * per sequence [layers][maxTokens][kvHeads][headDim] K and V, key t at position t, and a barrier-free attention
 * kernel. Sequences are created on first use.
 */
export class DenseAttentionBackend implements GpuAttentionBackend {
  private readonly spec: KernelSpec;
  private readonly sequences = new Map<number, DenseSequence>();

  constructor(
    private readonly gpu: GpuContext,
    readonly shape: { layers: number; nHeads: number; kvHeads: number; headDim: number; maxTokens: number },
  ) {
    this.spec = {
      name: 'dense_attention_test',
      body: denseBody,
      constants: {
        WORKGROUP_SIZE: { type: 'u32', value: 64 },
        N_HEADS: { type: 'u32', value: shape.nHeads },
        KV_HEADS: { type: 'u32', value: shape.kvHeads },
        HEAD_DIM: { type: 'u32', value: shape.headDim },
      },
      uniforms: [PARAMS],
    };
  }

  beginStep(seqId: number, numTokens: number): KvStep {
    let seq = this.sequences.get(seqId);
    if (!seq) {
      const bytes = this.shape.layers * this.shape.maxTokens * this.shape.kvHeads * this.shape.headDim * 4;
      seq = {
        keys: createStorageBuffer(this.gpu, `dense:${seqId}:keys`, bytes),
        values: createStorageBuffer(this.gpu, `dense:${seqId}:values`, bytes),
        length: 0,
      };
      this.sequences.set(seqId, seq);
    }
    if (seq.length + numTokens > this.shape.maxTokens) {
      throw new OutOfBlocksError('full', seq.length + numTokens - this.shape.maxTokens, 0, 'the dense test cache is full');
    }
    const positions = Uint32Array.from({ length: numTokens }, (_, i) => seq.length + i);
    seq.length += numTokens;
    return { seqId, numTokens, positions };
  }

  encodeLayer(
    encoder: GPUCommandEncoder,
    step: KvStep,
    layer: number,
    io: LayerIo,
  ): void {
    const seq = this.sequences.get(step.seqId);
    if (!seq) throw new UnknownSequenceError(step.seqId);
    const { nHeads, kvHeads, headDim, maxTokens } = this.shape;
    const first = step.positions[0];
    if (first === undefined) throw new InvalidArgumentError('step', 'empty step');
    const rowBytes = kvHeads * headDim * 4;
    const at = (layer * maxTokens + first) * rowBytes;
    encoder.copyBufferToBuffer(io.keys, 0, seq.keys, at, step.numTokens * rowBytes);
    encoder.copyBufferToBuffer(io.values, 0, seq.values, at, step.numTokens * rowBytes);
    const uniforms = this.gpu.uniformBuffer(
      'dense_attention:params',
      PARAMS.pack({ num_queries: step.numTokens, first_position: first, layer, max_tokens: maxTokens, scale: 1 / Math.sqrt(headDim) }),
    );
    const pass = encoder.beginComputePass({ label: 'dense_attention_test' });
    encodeDispatch(
      this.gpu,
      pass,
      kernelPipeline(this.gpu, this.spec),
      [uniforms, io.queries, seq.keys, seq.values, io.out],
      Math.ceil((step.numTokens * nHeads) / 64),
    );
    pass.end();
  }

  endStep(): void {}

  /** Forgets a sequence (its next step starts at position 0). */
  free(seqId: number): void {
    const seq = this.sequences.get(seqId);
    if (!seq) return;
    seq.keys.destroy();
    seq.values.destroy();
    this.sequences.delete(seqId);
  }

  destroy(): void {
    for (const id of [...this.sequences.keys()]) this.free(id);
  }
}
