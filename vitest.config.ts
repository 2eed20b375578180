import { readFileSync } from 'node:fs';
import { defineConfig, type Plugin } from 'vitest/config';

// Without the ICD file there is no adapter at all on machines without a GPU (../shared/docs/webgpu-runtime.md).
// A real GPU's driver wins when the user has one: they set KVCOMPACT_ADAPTER or VK_ICD_FILENAMES themselves.
process.env.XDG_RUNTIME_DIR ??= '/tmp';
if (process.env.KVCOMPACT_ADAPTER !== 'hardware') {
  process.env.VK_ICD_FILENAMES ??= '/usr/lib/chromium/vk_swiftshader_icd.json';
}

/** Imports `.wgsl` files as text, the same way esbuild's `text` loader does. */
function wgslAsText(): Plugin {
  return {
    name: 'wgsl-as-text',
    enforce: 'pre',
    load(id) {
      if (!id.endsWith('.wgsl')) return null;
      return `export default ${JSON.stringify(readFileSync(id, 'utf8'))};`;
    },
  };
}

export default defineConfig({
  plugins: [wgslAsText()],
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
    fileParallelism: true,
    maxWorkers: 2,
  },
});
