#!/usr/bin/env node
// The CLI is bundled by `npm run build` into dist/cli.js.
import('../dist/cli.js').catch((error) => {
  if (error && error.code === 'ERR_MODULE_NOT_FOUND') {
    console.error('kvcompact: dist/cli.js is missing; run `npm run build` first');
    process.exit(1);
  }
  throw error;
});
