// The layout rules of docs/architecture.md, enforced: imports run one way (dependency-cruiser with
// .dependency-cruiser.cjs), no file under src/ grows past 600 lines.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sourceFiles(path) : path.endsWith('.ts') ? [path] : [];
  });
}

function lineCount(text: string): number {
  return text.split('\n').length - (text.endsWith('\n') ? 1 : 0);
}

describe('the architecture', () => {
  it('imports run one way: no cycle, no upward import, node: modules only behind the Node entry', () => {
    const result = spawnSync(join(root, 'node_modules/.bin/depcruise'), ['src', '--config', '.dependency-cruiser.cjs', '--output-type', 'err'], {
      cwd: root,
      encoding: 'utf8',
    });
    expect(result.stdout + result.stderr).toMatch(/no dependency violations found/);
    expect(result.status).toBe(0);
  });

  it('no file under src/ is over 600 lines', () => {
    const long = sourceFiles(join(root, 'src'))
      .map((path) => ({ path: path.slice(root.length), lines: lineCount(readFileSync(path, 'utf8')) }))
      .filter((file) => file.lines > 600);
    expect(long).toEqual([]);
  });
});
