// Every `ts` code block of README.md's API section runs, as a user would paste it: imports of 'kvcompact' and
// 'kvcompact/node' resolve to the sources, and a block passes when it runs to the end without throwing.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const readme = readFileSync(join(root, 'README.md'), 'utf8');
const api = readme.slice(readme.indexOf('## API'), readme.indexOf('\n## ', readme.indexOf('## API') + 1));
const blocks = [...api.matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => match[1] ?? '');
const scratch = join(root, 'test', '.readme');

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('README.md API examples', () => {
  it('has examples to run', () => {
    expect(blocks.length).toBeGreaterThanOrEqual(3);
  });

  blocks.forEach((code, i) => {
    it(`block ${i + 1} runs`, async () => {
      mkdirSync(scratch, { recursive: true });
      const source = code
        .replaceAll("from 'kvcompact/node'", "from '../../src/node.js'")
        .replaceAll("from 'kvcompact'", "from '../../src/index.js'");
      const file = join(scratch, `block-${i + 1}.ts`);
      writeFileSync(file, `${source}\nexport {};\n`);
      const printed: unknown[][] = [];
      const log = console.log;
      console.log = (...args: unknown[]) => void printed.push(args);
      try {
        await import(/* @vite-ignore */ file);
      } finally {
        console.log = log;
      }
      expect(printed.length).toBeGreaterThan(0);
    }, 120_000);
  });
});
