// The store through Redis from the command line: two fresh processes share a compressed state through a real
// redis-server (the second skips the prefill and produces identical tokens), a memory tier in front of Redis, and a
// Redis that is down: every request still completes with the right output. Runs the built CLI (npm run build first).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, STACK_LINE } from './cli-helpers.js';
import { freePort, RedisServer } from './helpers/redis-server.js';

interface GenerateJson {
  tokens: number[];
  report: { store: { hit: boolean; hitTokens: number; promptTokens: number; prefillTokens: number; saved: number } };
}

const PROMPT = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park';

function generate(store: string, extra: string[] = []): GenerateJson {
  const args = ['generate', '--json', '--prompt', PROMPT, '--steps', '12', '--policy', 'h2o', '--budget', '16', '--bits', '4', '--store', store, ...extra];
  const { status, stdout, stderr } = runCli(args, {}, 120_000);
  expect(stderr).not.toMatch(STACK_LINE);
  expect(status, stderr).toBe(0);
  return JSON.parse(stdout) as GenerateJson;
}

describe('kvcompact generate --store redis://', () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await RedisServer.start();
  });
  afterAll(async () => {
    await server?.destroy();
  });

  it('a second process restores what the first saved in Redis: the prefill skipped, the same tokens; tenants apart', () => {
    const first = generate(server.url, ['--tenant', 'a']);
    expect(first.report.store).toMatchObject({ hit: false, hitTokens: 0 });
    expect(first.report.store.saved).toBeGreaterThan(0);
    // The process exited only after its queued writes reached the server.
    expect(Number(server.cli('DBSIZE'))).toBe(first.report.store.saved);

    const second = generate(server.url, ['--tenant', 'a']);
    expect(second.tokens).toEqual(first.tokens);
    expect(second.report.store.hit).toBe(true);
    expect(second.report.store.prefillTokens).toBeLessThan(second.report.store.promptTokens);

    const other = generate(server.url, ['--tenant', 'b']);
    expect(other.report.store.hit).toBe(false);
    expect(other.tokens).toEqual(first.tokens);

    // A memory tier in front of Redis: the fresh process's memory is empty, so the hit comes from Redis behind it.
    const layered = generate(`memory,${server.url}`, ['--tenant', 'a']);
    expect(layered.report.store.hit).toBe(true);
    expect(layered.tokens).toEqual(first.tokens);

    const stats = runCli(['store', 'stats', '--store', server.url, '--json']);
    expect(stats.status, stats.stderr).toBe(0);
    const { tiers } = JSON.parse(stats.stdout) as { tiers: { name: string; entries: number }[] };
    expect(tiers[0]?.entries).toBe(Number(server.cli('DBSIZE')));
  });

  it('with Redis down every request still completes, a miss, with the right tokens', async () => {
    const reference = generate('memory');
    const dead = `redis://127.0.0.1:${await freePort()}`;
    const run = generate(dead);
    expect(run.report.store.hit).toBe(false);
    expect(run.tokens).toEqual(reference.tokens);
  });

  it('a malformed Redis URL is a usage error that shows no password', () => {
    const { status, stderr } = runCli(['generate', '--prompt', 'Lily', '--steps', '2', '--store', 'redis://user:s3cret@:notaport']);
    expect(status).toBe(2);
    expect(stderr).not.toContain('s3cret');
    expect(stderr).not.toMatch(STACK_LINE);
  });
});
