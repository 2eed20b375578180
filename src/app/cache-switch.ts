import { KvCompactError } from '../errors.js';
import type { GpuAttentionBackend, KvStep, LayerIo } from '../attention/backend.js';

/**
 * An attention backend that forwards to whichever cache is current. GpuLlama binds one backend for its whole
 * life (and uploads its weights in the constructor); the generator needs a different cache per quantization
 * width (a cache's quantized pool has one bit width), so it swaps caches here instead of re-uploading the model.
 *
 * @example
 * ```ts
 * const backend = new CacheSwitch(cache16);
 * const model = new GpuLlama(gpu, checkpoint, backend);
 * backend.use(cache4);          // later forwards attend over cache4
 * ```
 */
export class CacheSwitch implements GpuAttentionBackend {
  /** Which backend began each step in flight, so endStep reaches it even if `use` ran in between. */
  private readonly owners = new WeakMap<KvStep, GpuAttentionBackend>();

  constructor(private current: GpuAttentionBackend) {}

  /** Makes `backend` the target of the next beginStep. */
  use(backend: GpuAttentionBackend): void {
    this.current = backend;
  }

  /** The backend new steps go to. */
  get target(): GpuAttentionBackend {
    return this.current;
  }

  /** Whether the current cache records into the caller's pass (steps begun on another one are checked per layer). */
  get recordsIntoPass(): boolean {
    return this.current.recordsIntoPass ?? false;
  }

  beginStep(seqId: number, numTokens: number): KvStep {
    const step = this.current.beginStep(seqId, numTokens);
    this.owners.set(step, this.current);
    return step;
  }

  encodeLayer(
    encoder: GPUCommandEncoder,
    step: KvStep,
    layer: number,
    io: LayerIo,
  ): void {
    this.passCapable(this.owner(step), io).encodeLayer(encoder, step, layer, io);
  }

  encodeLayerBatch(encoder: GPUCommandEncoder, steps: readonly KvStep[], layer: number, io: LayerIo): boolean {
    const owner = steps[0] ? this.owner(steps[0]) : undefined;
    if (!owner?.encodeLayerBatch || steps.some((step) => this.owner(step) !== owner)) return false;
    return this.passCapable(owner, io).encodeLayerBatch?.(encoder, steps, layer, io) ?? false;
  }

  endStep(step: KvStep): void {
    this.owner(step).endStep(step);
    this.owners.delete(step);
  }

  private passCapable(owner: GpuAttentionBackend, io: LayerIo): GpuAttentionBackend {
    if (io.pass && !owner.recordsIntoPass) {
      throw new KvCompactError('CacheSwitch: a step begun on a cache that records no open pass was given one; switch caches between forwards');
    }
    return owner;
  }

  private owner(step: KvStep): GpuAttentionBackend {
    const owner = this.owners.get(step);
    if (!owner) throw new KvCompactError('CacheSwitch: this step was not begun through this switch');
    return owner;
  }
}
