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
export * from './kernels/cache/accumulate-attention.js';
export * from './kernels/cache/cache-constants.js';
export * from './kernels/compress/compact-blocks.js';
export * from './kernels/model/embedding.js';
export * from './kernels/model/matmul.js';
export * from './kernels/model/model-checks.js';
export * from './kernels/model/rmsnorm.js';
export * from './kernels/model/rope.js';
export * from './kernels/model/swiglu.js';
export * from './kernels/compress/gather-stats.js';
export * from './kernels/compress/mass-kept.js';
export * from './kernels/compress/score-stats.js';
export * from './kernels/compress/score-target.js';
export * from './kernels/compress/select.js';
export * from './kernels/compress/snapkv-lse.js';
export * from './kernels/compress/snapkv-score.js';
export * from './kernels/cache/copy.js';
export * from './kernels/cache/copy-ranges.js';
export * from './kernels/cache/kv-append.js';
export * from './kernels/cache/paged-attention.js';

// Paged cache
export * from './format/layout.js';
export * from './cache/memory-report.js';
export * from './cache/block-allocator.js';
export * from './cache/block-tables.js';
export * from './cache/cache-metadata.js';
export * from './cache/cache-options.js';
export * from './cache/invariants.js';
export * from './engine/paged-kv-cache.js';

// Compression
export * from './compress/budgets.js';
export * from './compress/budgets-gpu.js';
export * from './cache/compaction-plan.js';
export * from './compress/decode-compression.js';
export * from './compress/decode-schedule.js';
export * from './compress/gpu-policies.js';
export * from './compress/options.js';
export * from './compress/policy.js';
export * from './compress/registry.js';
export * from './compress/select.js';

// References (also the CPU fallback)
export * from './attention/reference-attention.js';
export * from './format/block-codec.js';
export * from './kernels/cache/copy-reference.js';
export * from './format/f16.js';

// Model
export * from './attention/backend.js';
export * from './model/cache-options.js';
export * from './model/checkpoint.js';
export * from './model/gpu-llama.js';
export * from './model/hf/config.js';
export * from './model/hf/loader.js';
export * from './model/hf/safetensors.js';
export * from './model/hf/tokenizer.js';
export * from './model/reference-forward.js';
export * from './model/sampling.js';
export * from './model/tokenizer.js';

// CPU engine (the references behind the same cache API)
export * from './engine/cpu-kv-cache.js';

// Generation and evaluation
export * from './app/generator.js';
export * from './eval/eval-text.js';
export * from './eval/evaluate.js';
export * from './eval/metrics.js';
export * from './eval/cpu-engine.js';
export * from './eval/gpu-engine.js';
