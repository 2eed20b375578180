import partsBody from '../../../shaders/select_threshold_parts.wgsl';
import selectCommonLibrary from '../../../shaders/select_common.wgsl';
import selectBinSearchLibrary from '../../../shaders/select_bin_search.wgsl';
import { InvalidArgumentError } from '../../errors.js';
import type { GpuContext } from '../../gpu/context.js';
import { encodeDispatch, kernelPipeline, type KernelSpec } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';

const PARTS_PARAMS = new UniformLayout('SelectPartsParams', [
  { name: 'num_segments', type: 'u32' },
  { name: 'stride', type: 'u32' },
  { name: 'use_exclusion', type: 'u32' },
  { name: 'parts', type: 'u32' },
  { name: 'phase', type: 'u32' },
  { name: 'candidate_capacity', type: 'u32' },
]);

/** State words per segment: prefix, mask, remaining, unused. */
const STATE_WORDS = 4;
/** Words per part of a segment: three histograms (2048 + 2048 + 1024 bins) and its candidate count. */
const PART_WORDS = 5121;
/** The four dispatches of shaders/select_threshold_parts.wgsl: read, choose, read and collect, finish. */
const PHASES = [0, 1, 2, 3] as const;

/**
 * The buffers of a joint selection, the thresholds alone (`SegmentThresholdRun` in ./select.ts adds the per-member
 * counts): each segment picks its k best tokens over the union of its member rows.
 */
export interface PartsThresholdRun {
  readonly scores: GPUBuffer;
  readonly stride: number;
  readonly numSegments: number;
  /** u32 [segment][3]: {first member, member count, k}. */
  readonly segments: GPUBuffer;
  /** u32 [member][2]: {row, length}. Members of a segment are consecutive. */
  readonly members: GPUBuffer;
  /**
   * u32 [member][2] {key, keepEqual}: each member's own top tokens to leave out (a threshold from an earlier
   * run over single-member segments); absent = nothing left out.
   */
  readonly exclusions?: GPUBuffer;
  /** u32 [segment][2] output: {threshold key, keepEqual}. */
  readonly thresholds: GPUBuffer;
  /** Members (for the counts buffer size). */
  readonly numMembers: number;
}

/**
 * Joint thresholds with each segment's full reads spread over several workgroups (`select_threshold_parts`):
 * for a few long segments, where `select_threshold` would run one workgroup per segment. Same result bit for
 * bit. Owns a scratch buffer (per segment and part 20 KiB of histograms, plus the candidate lists), grown as
 * needed and freed by {@link SegmentPartsThreshold.destroy}. Used by `TopKSelectKernel.encodeSegmentThresholds`.
 *
 * @example
 * ```ts
 * const parts = new SegmentPartsThreshold(gpu, 16);
 * parts.encode(encoder, run, 8, 4096); // 8 workgroups per segment, 4096 candidates per segment
 * ```
 */
export class SegmentPartsThreshold {
  readonly spec: KernelSpec;
  private scratch: GPUBuffer | undefined;
  /** Outgrown scratch buffers: an encoder not yet submitted may still use them, so they go in destroy(). */
  private retired: GPUBuffer[] = [];

  constructor(
    private readonly gpu: GpuContext,
    workgroupSize: number,
  ) {
    this.spec = {
      name: 'select_threshold_parts',
      body: partsBody,
      libraries: [selectCommonLibrary, selectBinSearchLibrary],
      constants: { WORKGROUP_SIZE: { type: 'u32', value: workgroupSize } },
      uniforms: [PARTS_PARAMS],
    };
  }

  /** Records the four dispatches: `parts` workgroups per segment for the reads, lists of `capacity` keys in all. */
  encode(encoder: GPUCommandEncoder, run: PartsThresholdRun, parts: number, capacity: number): void {
    const limit = Math.min(this.gpu.limits.maxStorageBufferBindingSize, this.gpu.limits.maxBufferSize);
    const cleared = run.numSegments * (STATE_WORDS + parts * PART_WORDS);
    const fits = Math.floor((Math.floor(limit / 4) - cleared) / (run.numSegments * parts));
    if (fits < 0) {
      throw new InvalidArgumentError('numSegments', `${run.numSegments} segments × ${parts} parts of histograms (${PART_WORDS * 4} B each) exceed one storage binding; select fewer at a time`);
    }
    const listed = Math.min(Math.ceil(capacity / parts), fits);
    const bytes = (cleared + run.numSegments * parts * listed) * 4;
    if (!this.scratch || this.scratch.size < bytes) {
      if (this.scratch) this.retired.push(this.scratch);
      const size = Math.min(Math.floor(limit / 4) * 4, Math.max(bytes, 2 * (this.scratch?.size ?? 0)));
      this.scratch = this.gpu.device.createBuffer({ label: 'select_threshold_parts:scratch', size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
    }
    encoder.clearBuffer(this.scratch, 0, cleared * 4);
    const pipeline = kernelPipeline(this.gpu, this.spec);
    const pass = encoder.beginComputePass({ label: 'select_threshold_parts' });
    for (const phase of PHASES) {
      const uniforms = this.gpu.uniformBuffer(
        'select_threshold_parts:params',
        PARTS_PARAMS.pack({
          num_segments: run.numSegments,
          stride: run.stride,
          use_exclusion: run.exclusions ? 1 : 0,
          parts,
          phase,
          candidate_capacity: listed,
        }),
      );
      const reading = phase === 0 || phase === 2;
      encodeDispatch(
        this.gpu,
        pass,
        pipeline,
        [uniforms, run.scores, run.segments, run.members, run.exclusions ?? run.members, run.thresholds, this.scratch],
        run.numSegments * (reading ? parts : 1),
      );
    }
    pass.end();
  }

  /** Releases the scratch buffers. */
  destroy(): void {
    this.scratch?.destroy();
    this.scratch = undefined;
    for (const buffer of this.retired) buffer.destroy();
    this.retired = [];
  }
}
