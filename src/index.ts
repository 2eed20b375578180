// Browser-safe core of kvcompact. Node-only parts (Dawn, files, downloads) are in `kvcompact/node`.
export * from './errors.js';

// GPU layer
export * from './gpu/adapter-report.js';
export * from './gpu/buffer-pool.js';
export * from './gpu/buffers.js';
export * from './gpu/context.js';
export * from './gpu/dispatch.js';
export * from './gpu/kernel.js';
export * from './gpu/pipeline-cache.js';
export * from './gpu/prelude.js';
export * from './gpu/uniforms.js';

// Kernels
export * from './kernels/accumulate-attention.js';
export * from './kernels/cache-constants.js';
export * from './kernels/compact-blocks.js';
export * from './kernels/embedding.js';
export * from './kernels/matmul.js';
export * from './kernels/model-checks.js';
export * from './kernels/rmsnorm.js';
export * from './kernels/rope.js';
export * from './kernels/swiglu.js';
export * from './kernels/gather-stats.js';
export * from './kernels/mass-kept.js';
export * from './kernels/score-stats.js';
export * from './kernels/score-target.js';
export * from './kernels/select.js';
export * from './kernels/snapkv-lse.js';
export * from './kernels/snapkv-score.js';
export * from './kernels/copy.js';
export * from './kernels/copy-ranges.js';
export * from './kernels/kv-append.js';
export * from './kernels/paged-attention.js';

// Paged cache
export * from './cache/layout.js';
export * from './cache/memory-report.js';
export * from './cache/block-allocator.js';
export * from './cache/block-tables.js';
export * from './cache/cache-metadata.js';
export * from './cache/cache-options.js';
export * from './cache/invariants.js';
export * from './cache/paged-kv-cache.js';

// Compression
export * from './compress/budgets.js';
export * from './compress/budgets-gpu.js';
export * from './compress/compaction-plan.js';
export * from './compress/decode-compression.js';
export * from './compress/gpu-compressor.js';
export * from './compress/gpu-policies.js';
export * from './compress/options.js';
export * from './compress/policy.js';
export * from './compress/registry.js';
export * from './compress/select.js';

// References (also the CPU fallback)
export * from './reference/attention.js';
export * from './reference/block-codec.js';
export * from './reference/copy.js';
export * from './reference/f16.js';

// Model
export * from './model/attention-backend.js';
export * from './model/checkpoint.js';
export * from './model/eval-text.js';
export * from './model/gpu-llama.js';
export * from './model/reference-forward.js';
export * from './model/sampling.js';
export * from './model/tokenizer.js';

// CPU engine (the references behind the same cache API)
export * from './reference/cpu-kv-cache.js';

// Generation and evaluation
export * from './app/generator.js';
export * from './eval/evaluate.js';
export * from './eval/cpu-engine.js';
export * from './eval/gpu-engine.js';
