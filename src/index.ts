// Browser-safe core of kvcompact. Node-only parts (Dawn, files, downloads) are in `kvcompact/node`.
export * from './errors.js';
export * from './gpu/adapter-report.js';
export * from './gpu/buffer-pool.js';
export * from './gpu/buffers.js';
export * from './gpu/context.js';
export * from './gpu/dispatch.js';
export * from './gpu/kernel.js';
export * from './gpu/pipeline-cache.js';
export * from './gpu/prelude.js';
export * from './gpu/uniforms.js';
export * from './kernels/copy.js';
export * from './reference/copy.js';
export * from './cache/layout.js';
