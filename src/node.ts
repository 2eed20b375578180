// kvcompact/node: the core (see index.ts) plus what only Node can do: Dawn through the npm `webgpu` package, model
// files on disk and downloads, and a static server for the demo page.
export * from './index.js';
export { createNodeGpu, parseAdapterChoice, ADAPTER_CHOICES, type AdapterChoice, type NodeGpuOptions } from './node/gpu.js';
export { dawnPolling, parseDawnPolling, setDawnPolling, DAWN_POLLING_CHOICES, DAWN_SPIN_MS, type DawnPolling } from './node/dawn-polling.js';
export {
  loadModelFiles,
  resolveModelFiles,
  STORIES260K_MODEL,
  STORIES260K_TOKENIZER,
  type LoadedModel,
  type ModelFileSource,
  type ResolveModelFilesOptions,
  type ResolvedModelFiles,
} from './node/model-files.js';
export {
  detectModelFormat,
  directoryFolder,
  downloadHfModel,
  loadNodeModel,
  parseHubId,
  type DownloadHfModelOptions,
  type LoadNodeModelOptions,
  type ModelFormat,
  type NodeModel,
} from './node/hf-model-files.js';
export { serveStatic, type StaticServer } from './node/static-server.js';
export {
  openRedisTier,
  RedisTier,
  type DroppedWrite,
  type OpenRedisTierOptions,
  type RedisFailure,
  type RedisServerStats,
  type RedisTierOptions,
  type RedisTierStats,
  type RedisTlsOptions,
} from './node/redis-tier.js';
export { CircuitBreaker, clusterSlot, groupedKey, redactUrl, type BreakerState } from './node/redis-support.js';
export { DirectoryBackend, openDirectoryTier, TEMP_PREFIX, type DirectoryTierOptions } from './node/directory-tier.js';
