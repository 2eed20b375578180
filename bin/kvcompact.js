#!/usr/bin/env node
// The CLI is bundled by `npm run build` into dist/cli.js, which handles its own errors and exit status.
import('../dist/cli.js').catch((error) => {
  // Only a missing bundle means "build first"; a missing dependency inside it is reported as itself.
  if (error && error.code === 'ERR_MODULE_NOT_FOUND' && String(error.message).includes('dist/cli.js')) {
    console.error('kvcompact: dist/cli.js is missing; run `npm run build` first');
  } else {
    console.error(`kvcompact: cannot start: ${error && error.message ? error.message : error}`);
  }
  process.exit(1);
});
