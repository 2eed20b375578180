import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { parseHfConfig } from '../model/hf/config.js';
import { UsageError } from '../errors.js';
import { detectModelFormat, downloadHfModel } from '../node/hf-model-files.js';
import { resolveModelFiles } from '../node/model-files.js';
import { serveStatic } from '../node/static-server.js';
import { type CommandSpec, type FlagTable, integerFlag, parseFlags, printUsage } from './flags.js';

const SERVE_DEMO_FLAGS = {
  port: { type: 'string', value: 'N', help: 'port on 127.0.0.1 (default 8080; 0 picks a free one)' },
  model: {
    type: 'string',
    value: 'DIR|FILE|hf:ORG/NAME',
    help: 'a Hugging Face model folder, a llama2.c checkpoint, or a Hub model to download, to mount (default: stories260K)',
  },
  tokenizer: { type: 'string', value: 'FILE', help: 'a llama2.c checkpoint\'s tokenizer (default: tok512.bin beside it)' },
  context: { type: 'string', value: 'N', help: "HF models: context the page runs with (default 2048, at most the model's)" },
} as const satisfies FlagTable;

/**
 * `kvcompact serve-demo`: its flags and help.
 *
 * @example
 * ```ts
 * process.stdout.write(usageText(SERVE_DEMO_COMMAND));
 * ```
 */
export const SERVE_DEMO_COMMAND: CommandSpec<typeof SERVE_DEMO_FLAGS> = {
  name: 'serve-demo',
  summary: '(npm run demo) serve the live demo page on 127.0.0.1 with the model files mounted',
  flags: SERVE_DEMO_FLAGS,
};

/**
 * The mounts and page address that serve a checkpoint and tokenizer beside the built demo: both under /models/
 * when they share a directory (the page's defaults when they are stories260K's), else one mount each, with the
 * page told where they are by query parameters.
 *
 * @example
 * ```ts
 * demoMounts('/m/stories260K.bin', '/m/tok512.bin'); // { mounts: { '/models/': '/m' }, query: '' }
 * ```
 */
export function demoMounts(modelPath: string, tokenizerPath: string): { mounts: Record<string, string>; query: string } {
  const modelDir = dirname(resolve(modelPath));
  const tokenizerDir = dirname(resolve(tokenizerPath));
  const mounts: Record<string, string> = { '/models/': modelDir };
  let tokenizerUrl = `/models/${basename(tokenizerPath)}`;
  if (tokenizerDir !== modelDir) {
    mounts['/tokenizer/'] = tokenizerDir;
    tokenizerUrl = `/tokenizer/${basename(tokenizerPath)}`;
  }
  const modelUrl = `/models/${basename(modelPath)}`;
  const params = new URLSearchParams();
  if (modelUrl !== '/models/stories260K.bin') params.set('model', modelUrl);
  if (tokenizerUrl !== '/models/tok512.bin') params.set('tokenizer', tokenizerUrl);
  const query = params.toString();
  return { mounts, query: query ? `?${query}` : '' };
}

/**
 * The mount and page address that serve a Hugging Face model folder: the folder under /hf/, the page told by
 * `?hf=/hf/` (and the context to run with: a full 8K+ context of a real model is more cache than a demo needs).
 *
 * @example
 * ```ts
 * hfDemoMounts('/cache/hf/HuggingFaceTB/SmolLM2-135M-Instruct', 2048); // { mounts: { '/hf/': ... }, query: '?hf=%2Fhf%2F&context=2048' }
 * ```
 */
export function hfDemoMounts(directory: string, contextLength: number): { mounts: Record<string, string>; query: string } {
  const params = new URLSearchParams({ hf: '/hf/', context: String(contextLength) });
  return { mounts: { '/hf/': resolve(directory) }, query: `?${params.toString()}` };
}

/** The mounts of `--model`: a llama2.c checkpoint and tokenizer, or a HF folder (downloaded first for `hf:`). */
async function modelMounts(values: { model?: string; tokenizer?: string; context?: string }): Promise<{ mounts: Record<string, string>; query: string }> {
  const format = values.model === undefined ? 'llama2c' : detectModelFormat(values.model);
  if (format === 'llama2c') {
    if (values.context !== undefined) throw new UsageError('--context', 'is for Hugging Face models (a llama2.c checkpoint runs with its seq_len): drop it');
    const files = await resolveModelFiles({
      ...(values.model !== undefined ? { model: values.model } : {}),
      ...(values.tokenizer !== undefined ? { tokenizer: values.tokenizer } : {}),
    });
    process.stderr.write(`format: llama2.c checkpoint\n${files.message}\n`);
    return demoMounts(files.modelPath, files.tokenizerPath);
  }
  if (values.tokenizer !== undefined) throw new UsageError('--tokenizer', 'is for llama2.c checkpoints; a Hugging Face model uses its tokenizer.json: drop --tokenizer');
  const spec = values.model as string;
  let directory = resolve(spec);
  let where = `model: using the folder ${directory} (given explicitly)`;
  if (format === 'hf-hub') {
    const downloaded = await downloadHfModel(spec, { onProgress: (file, index, count) => void process.stderr.write(`downloading ${file} (${index}/${count})\n`) });
    directory = downloaded.directory;
    where = downloaded.message;
  }
  const config = parseHfConfig(await readFile(join(directory, 'config.json'), 'utf8'));
  const context = integerFlag('--context', values.context, Math.min(2048, config.llama.seqLen), { min: 2 });
  process.stderr.write(`format: Hugging Face ${config.architecture} (the page reads config.json, tokenizer.json and the safetensors)\n${where}\n`);
  return hfDemoMounts(directory, context);
}

/**
 * `kvcompact serve-demo` (`npm run demo`, which builds the page first): serves dist/demo on 127.0.0.1 with the
 * model files found by resolveModelFiles mounted under /models/, prints the URL and runs until interrupted.
 *
 * @example
 * ```ts
 * await serveDemoCommand(['--port', '8080']);
 * ```
 */
export async function serveDemoCommand(argv: string[]): Promise<number> {
  const values = parseFlags(SERVE_DEMO_COMMAND, argv);
  if (values === 'help') return printUsage(SERVE_DEMO_COMMAND);
  const port = integerFlag('--port', values.port, 8080, { min: 0, max: 65535 });
  const root = resolve('dist/demo');
  if (!existsSync(resolve(root, 'index.html'))) {
    throw new UsageError('dist/demo', `${root}/index.html is missing: build it with \`npm run demo\` (or \`node esbuild.config.mjs\`)`);
  }
  const { mounts, query } = await modelMounts(values);
  const site = await serveStatic(root, { port, mounts }).catch((error: unknown) => {
    if (error instanceof Error && 'code' in error && error.code === 'EADDRINUSE') {
      throw new UsageError('--port', `port ${port} is in use on 127.0.0.1: pass another (--port 0 picks a free one)`);
    }
    throw error;
  });
  process.stdout.write(
    `kvcompact demo page: ${site.url}${query}\n` +
      'open it in Chrome or Edge 113+ (on Linux start Chrome with --enable-unsafe-webgpu); Ctrl-C stops the server\n',
  );
  await new Promise<void>((done) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      const closing = site.close();
      // Browsers keep connections alive; close() alone would wait for them.
      site.server.closeAllConnections();
      void closing.then(done);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  return 0;
}
