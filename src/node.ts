// Node entry of kvcompact: everything in the core, plus the Node-only parts (Dawn through npm `webgpu`, files).
export * from './index.js';
export * from './node/gpu.js';
export * from './node/hf-model-files.js';
export * from './node/model-files.js';
export * from './node/static-server.js';
