// Runs the built CLI (dist/cli.js) as a user does: a separate process, real stdout / stderr / exit status.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '..');
const CLI = join(ROOT, 'dist', 'cli.js');

/** What one CLI run produced. */
export interface CliResult {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function newestSource(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestSource(path) : statSync(path).mtimeMs);
  }
  return newest;
}

let checked = false;

/** Fails loudly instead of testing a stale bundle (`npm test` builds before it runs the tests). */
function assertFreshBuild(): void {
  if (checked) return;
  let built: number;
  try {
    built = statSync(CLI).mtimeMs;
  } catch {
    throw new Error(`${CLI} is missing: run \`npm run build\` (npm test does) before these tests`);
  }
  const sources = Math.max(newestSource(join(ROOT, 'src')), newestSource(join(ROOT, 'shaders')));
  if (sources > built) throw new Error(`${CLI} is older than src/: run \`npm run build\` (npm test does) before these tests`);
  checked = true;
}

/**
 * Runs `node dist/cli.js ...args`. `env` entries replace the test process's (undefined deletes one), so a test
 * can run without the VK_ICD_FILENAMES that vitest.config.ts sets.
 */
export function runCli(args: readonly string[], env: Record<string, string | undefined> = {}, timeoutMs = 60_000): CliResult {
  assertFreshBuild();
  const merged: Record<string, string> = {};
  for (const [key, value] of Object.entries({ ...process.env, ...env })) if (value !== undefined) merged[key] = value;
  const result = spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, env: merged, encoding: 'utf8', timeout: timeoutMs });
  if (result.error) throw result.error;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** A stack trace line ("    at f (file:1:2)"): typed errors must never print one. */
export const STACK_LINE = /^\s+at .+[:(]/m;

/** The shared stories260K files the tests run on. */
export const SHARED_MODEL = resolve(ROOT, '..', 'shared', 'models', 'stories260K.bin');
export const SHARED_TOKENIZER = resolve(ROOT, '..', 'shared', 'models', 'tok512.bin');
