// kvcompact, the browser-safe core: what an application or an inference engine uses. Node-only parts (Dawn,
// files, downloads) are in `kvcompact/node`. Internals (kernels, pools, plans) are imported from their files by
// kvcompact's own code and tests, and are not part of the public API.

// Errors: every failure is one of these, and its message says what to do.
export {
  KvCompactError,
  NoAdapterError,
  DeviceLostError,
  LimitExceededError,
  InvalidArgumentError,
  BufferUsageError,
  OutOfBlocksError,
  UnknownSequenceError,
  NonFiniteValueError,
  ModelFormatError,
  UnknownPolicyError,
  GpuValidationError,
  MissingObservationWindowError,
  CacheDestroyedError,
  SequenceBusyError,
  CacheInvariantError,
  NonFiniteWeightsError,
  UsageError,
  HfModelError,
  UnsupportedDtypeError,
  UnknownArchitectureError,
  MissingTensorError,
  TruncateCompressedError,
  StoreEntryError,
  SnapshotMismatchError,
  type StoreEntryReason,
} from './errors.js';

// The GPU handle (browser: GpuContext.fromNavigator(); your own device: GpuContext.adopt(device)).
export { GpuContext, type GpuContextInit } from './gpu/context.js';
export type { AdapterReport } from './gpu/adapter-report.js';
export { createStorageBuffer, readBuffer } from './gpu/buffers.js';

// Block formats and sizes, for planning memory.
export {
  type Bits,
  type BlockFormat,
  type FullFormat,
  type QuantFormat,
  type CacheShape,
  type BlockLayout,
  blockLayout,
  bytesPerBlock,
  bytesPerTokenPerHead,
  baselineF16Bytes,
} from './format/layout.js';

// The two engines: one API, the same options, defaults and reports.
export { PagedKvCache } from './engine/paged-kv-cache.js';
export { CpuKvCache, type CpuKvCacheOptions } from './engine/cpu-kv-cache.js';
export {
  EMPTY_WINDOW_POSITION,
  checkSnapshot,
  snapshotBytes,
  validateSnapshot,
  type SequenceSnapshot,
  type SnapshotBlockRef,
  type SnapshotRow,
  type SnapshotStats,
  type SnapshotTarget,
  type SnapshotWindow,
} from './engine/sequence-snapshot.js';
export type { PagedKvCacheOptions } from './cache/cache-options.js';
// Merge 'slots' state as snapshots carry it (SequenceSnapshot.slots); the engines' mergeSlots() read it per head.
export type { SnapshotSlots } from './cache/slot-state.js';
export type { CacheMemoryReport } from './cache/memory-report.js';
export type { HeadContents } from './cache/cpu-storage.js';

// The attention backend contract that model runners drive.
export type { AttentionHook, GpuAttentionBackend, KvStep, LayerIo } from './attention/backend.js';

// Compression: options and reports, budgets, policies (add your own with registerPolicy), the decode schedule.
export {
  DEFAULT_MERGE_SLOTS,
  GPU_MERGE_MODES,
  MERGE_MODES,
  type CompressOptions,
  type CompressionReport,
  type MergeMode,
} from './compress/options.js';
export type { AutoChoice, AutoCompressOptions, AutoCompressionReport } from './compress/auto.js';
export { BUDGET_MODES, type BudgetMode } from './compress/budgets.js';
export { clampProtection, defaultPolicy } from './compress/pipeline.js';
export {
  BasePolicy,
  DEFAULT_RECENT,
  DEFAULT_SINKS,
  type PolicyOptions,
  type PolicyRequirements,
  type ScoreInput,
  type ScoringPolicy,
} from './compress/policy.js';
export type { GpuScorePlan, TokenScorePlan, WindowScorePlan } from './compress/gpu-policies.js';
export { createPolicy, policyNames, policyRequirements, registerPolicy, type PolicyFactory } from './compress/registry.js';
export { DecodeCompressor, type CompressibleCache, type DecodeCompressorOptions, type DecodeCounters } from './compress/decode-compression.js';
export { decodeSchedule, nextCompression, type DecodeSchedule, type DecodeScheduleOptions } from './compress/decode-schedule.js';

// Models: llama2.c and Hugging Face checkpoints, tokenizers, the CPU and GPU forward passes, sampling.
export { parseCheckpoint, type LlamaCheckpoint, type LlamaConfig, type LlamaWeights } from './model/checkpoint.js';
export { BOS_ID, EOS_ID, Tokenizer, type TextTokenizer } from './model/tokenizer.js';
export { ReferenceLlama, type ReferenceLlamaOptions } from './model/reference-forward.js';
export { GpuLlama, type GpuLlamaOptions } from './model/gpu-llama.js';
export { cacheOptionsForModel } from './model/cache-options.js';
export { argmax, createSampler, sampleTopP, softmaxWithTemperature, type SamplerOptions } from './model/sampling.js';
export { parseHfConfig, type HfModelConfig } from './model/hf/config.js';
export { blobFolder, loadHfModel, memoryFolder, type HfModel, type LoadHfModelOptions, type ModelFolder } from './model/hf/loader.js';
export { HfTokenizer, loadHfTokenizer, type ChatMessage } from './model/hf/tokenizer.js';

// Evaluation: perplexity and agreement against the full cache, on either engine.
export { evaluate, type EvalEngine, type EvalReport, type EvalRow, type EvalRowSpec, type EvaluateOptions } from './eval/evaluate.js';
export { cpuEngineFactory } from './eval/cpu-engine.js';
export { gpuEngineFactory } from './eval/gpu-engine.js';
export { prepareEvalWindows } from './eval/eval-text.js';
export { AgreementAccumulator, PerplexityAccumulator, nll } from './eval/metrics.js';
export { formatEvalTable, renderEvalSvg } from './eval/report.js';

// Generation with a compressed cache, side by side with a full one.
export {
  Generator,
  type GenerateOptions,
  type GenerateResult,
  type GenerationReport,
  type GeneratorOptions,
  type GenerationStoreReport,
} from './app/generator.js';

// Reusing compressed caches: a generation goes on from a history (continueFrom) and restores saved states.
export { ResidentStates, type ContextReuse, type ReuseHit, type ReuseTarget, type ResidentStatesOptions } from './app/context-reuse.js';
export { StoreStates, type StoreStatesOptions } from './app/store-reuse.js';
export { cacheStateSettings, replayStream, splitLastPrefill, streamRest, type ReplayTarget } from './app/context-replay.js';

// Speculative decoding: prompt-lookup drafts verified in one pass, exact rollback with truncate().
export { PromptLookup, AdaptiveDraftLength, resolvePromptLookup } from './model/prompt-lookup.js';
export type { SpeculateOptions, SpeculativeReport } from './app/speculative-decoder.js';

// Reuse of compressed caches across requests (groundwork: keys, entry format, tiers, eviction).
export { CACHE_FORMAT_VERSION, longestSavedPrefix, namespaceHash, prefixChain, type CacheStateSettings, type PrefixChain, type SavedPrefix, type StoreNamespace } from './store/keys.js';
export { STORE_ENTRY_VERSION, decodeStoreEntry, encodeStoreEntry, type StoreEntry, type StoreEntryExpectation, type StoreEntryHeader } from './store/entry-format.js';
export { SNAPSHOT_LAYOUT_VERSION, entryToSnapshot, snapshotToEntry, type SnapshotEntryOptions } from './store/snapshot-entry.js';
export type { EvictionReason, MissReason, PutOptions, StoreTier, TierEntryInfo, TierStats } from './store/tier.js';
export { MemoryTier, type MemoryTierOptions } from './store/memory-tier.js';
export { normalizeStream, streamChain, streamTokenIds, streamTokens, type ContextSegment, type ContextStream, type StreamChain, type StreamLink } from './store/context-stream.js';
export {
  ContextStore,
  type ContextStoreOptions,
  type ContextStoreStats,
  type LookupOrComputeResult,
  type SaveOptions,
  type SavedEntry,
  type StoreExpectation,
  type StoreHit,
  type StoreListing,
  type StoreLookup,
  type StoreMiss,
  type StoreMissReason,
} from './store/context-store.js';
export { FileTier, FILE_KEY_PATTERN, entryFileName, parseEntryFileName, type BackendFile, type EntryFileName, type FileTierBackend, type FileTierOptions } from './store/file-tier.js';
export { IndexedDbBackend, OpfsBackend, browserStorageKind, openBrowserTier, type BrowserStorageKind, type BrowserStorageScope, type BrowserTierOptions } from './store/browser-tier.js';
export { DEFAULT_HALF_LIFE_MS, evictionPolicy, lfu, lru, priorityDecay, type EvictionPolicy, type EvictionPolicyName } from './store/eviction.js';
