import { describe, expect, it } from 'vitest';
import { runCli, STACK_LINE } from './cli-helpers.js';

const COMMANDS = ['info', 'generate', 'cag', 'store', 'demo', 'serve-demo', 'eval', 'merge-eval', 'bench'];

describe('kvcompact --help', () => {
  it.each([['--help'], ['-h'], ['help'], []])('top level %j prints the command list on stdout and exits 0', (...args) => {
    const { status, stdout, stderr } = runCli(args.filter((a): a is string => a !== undefined));
    expect(status).toBe(0);
    expect(stderr).toBe('');
    expect(stdout).toMatch(/^usage: kvcompact <command>/m);
    for (const command of COMMANDS) expect(stdout).toMatch(new RegExp(`^  ${command} `, 'm'));
  });

  it.each(COMMANDS.flatMap((command) => [[command, '--help'], [command, '-h']]))(
    '%s %s prints its options on stdout and exits 0 before any work',
    (command, flag) => {
      const { status, stdout, stderr } = runCli([command, flag]);
      expect(status).toBe(0);
      expect(stderr).toBe('');
      expect(stdout).toMatch(new RegExp(`^usage: kvcompact ${command} \\[options\\]`));
      expect(stdout).toMatch(/^ {2}-h, --help /m);
    },
  );

  it('lists every flag the command accepts, and help COMMAND prints the same text', () => {
    const { stdout } = runCli(['eval', '--help']);
    for (const flag of ['--model', '--tokenizer', '--text', '--window', '--windows', '--policies', '--budgets', '--bits', '--budget-mode', '--engine', '--adapter', '--json', '--plot']) {
      expect(stdout).toContain(`  ${flag}`);
    }
    expect(runCli(['help', 'eval']).stdout).toBe(stdout);
  });

  it('shows each command its own defaults (demo: 4-bit, 200 steps; generate: 16-bit, 64 steps)', () => {
    expect(runCli(['demo', '--help']).stdout).toMatch(/--steps N +tokens to generate \(default 200\)/);
    expect(runCli(['generate', '--help']).stdout).toMatch(/--steps N +tokens to generate \(default 64\)/);
    expect(runCli(['demo', '--help']).stdout).toMatch(/--bits .*\(default 4\)/);
  });

  it('--help wins over other arguments, even wrong ones', () => {
    const { status, stdout } = runCli(['eval', '--bogus', '--window', '-h']);
    expect(status).toBe(0);
    expect(stdout).toMatch(/^usage: kvcompact eval/);
  });
});

describe('usage errors', () => {
  it('an unknown command exits 2 naming the commands, on stderr', () => {
    const { status, stdout, stderr } = runCli(['evaluate']);
    expect(status).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toMatch(/unknown command "evaluate"; commands: info, generate, cag, store, demo, serve-demo, eval, merge-eval, bench, help/);
    expect(stderr.trim().split('\n')).toHaveLength(1);
  });

  it('an unknown flag exits 2 listing the valid ones, in one line without a stack', () => {
    const { status, stderr } = runCli(['eval', '--windo', '4']);
    expect(status).toBe(2);
    expect(stderr.trim().split('\n')).toEqual([
      'kvcompact eval: --windo: unknown option; valid options: --model, --tokenizer, --text, --window, --windows, --policies, --budgets, --bits, --budget-mode, --merge, --merge-slots, --block-size, --engine, --adapter, --json, --plot, --help',
    ]);
  });

  it.each([
    [['info', 'extra'], /extra: unexpected argument/],
    [['eval', '--window'], /--window: expects a value/],
    [['generate', '--prompt', 'x', '--seed', '-1'], /--seed: write a value that starts with "-" as --seed=VALUE/],
    [['generate', '--prompt', 'x', '--temperature=-1'], /--temperature: must be at least 0; got -1/],
    [['info', '--json=yes'], /--json: takes no value/],
    [['generate', '--prompt', 'x', '--steps', 'many'], /--steps: expects an integer; got "many"/],
    [['generate', '--prompt', 'x', '--top-p', '0'], /--top-p: must be in \(0, 1\]/],
    [['generate', '--steps', '2'], /--prompt: is required/],
    [['serve-demo', '--port', '70000'], /--port: must be at most 65535/],
    [['bench', '--only', 'nope'], /--only: unknown benchmark "nope"; known: .*peers/],
  ])('%j exits 2 with one line: %s', (args, message) => {
    const { status, stderr } = runCli(args);
    expect(status).toBe(2);
    expect(stderr).toMatch(message);
    expect(stderr).not.toMatch(STACK_LINE);
    expect(stderr.trim().split('\n')).toHaveLength(1);
  });
});
