// Full-cache perplexity of stories260K over the 8 evaluation windows of ../shared/README.md, forward pass on the
// GPU (GpuLlama) with attention through the paged cache (f32 blocks, no compression). Each window is one prefill
// chunk of 511 tokens whose logits all come back. Expected: ppl 3.6531, top-1 65.68% (the fp32 reference).
//
// Run from the repository root:
//   npx esbuild bench/gpu-model-perplexity.ts --bundle --platform=node --format=esm --loader:.wgsl=text \
//     --external:webgpu --outfile=dist/gpu-model-perplexity.mjs && node dist/gpu-model-perplexity.mjs [--windows N]
import { readFileSync } from 'node:fs';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import { cacheOptionsForModel } from '../src/model/cache-options.js';
import { parseCheckpoint } from '../src/model/checkpoint.js';
import { prepareEvalWindows } from '../src/eval/eval-text.js';
import { PerplexityAccumulator } from '../src/eval/metrics.js';
import { GpuLlama } from '../src/model/gpu-llama.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { createNodeGpu } from '../src/node/gpu.js';

const shared = (path: string): Buffer => readFileSync(new URL(`../shared/${path}`, `file://${process.cwd()}/`));

async function main(): Promise<void> {
  const windowsArg = process.argv.indexOf('--windows');
  const count = windowsArg >= 0 ? Number(process.argv[windowsArg + 1]) : 8;
  const checkpoint = parseCheckpoint(new Uint8Array(shared('models/stories260K.bin')));
  const { config } = checkpoint;
  const tokenizer = Tokenizer.parse(new Uint8Array(shared('models/tok512.bin')), config.vocabSize);
  const windows = prepareEvalWindows(shared('data/tinystories_dev.txt').toString('utf8'), tokenizer).slice(0, count);
  const gpu = await createNodeGpu();
  const cache = PagedKvCache.create(gpu, cacheOptionsForModel(config, { bits: 32, maxTokensPerHead: config.seqLen }));
  const model = new GpuLlama(gpu, checkpoint, cache);
  const acc = new PerplexityAccumulator();
  const start = performance.now();
  for (const [w, win] of windows.entries()) {
    cache.addSequence(w);
    const logits = await model.forward(w, Array.from(win.subarray(0, win.length - 1)), { allLogits: true });
    for (let t = 0; t + 1 < win.length; t++) {
      acc.add(logits.subarray(t * config.vocabSize, (t + 1) * config.vocabSize), win[t + 1] as number);
    }
    cache.freeSequence(w);
    console.log(`window ${w}: running ppl ${acc.result().perplexity.toFixed(5)} (${((performance.now() - start) / 1000).toFixed(1)} s)`);
  }
  const r = acc.result();
  console.log(
    `${gpu.adapter.description || gpu.adapter.architecture}: ppl ${r.perplexity.toFixed(5)}, mean NLL ${r.meanNll.toFixed(6)}, ` +
      `top-1 ${(100 * r.top1).toFixed(3)}% over ${r.count} predictions; ratio to 3.6531: ${(r.perplexity / 3.6531).toFixed(6)}`,
  );
  model.destroy();
  cache.destroy();
  await gpu.destroy();
}

await main();
