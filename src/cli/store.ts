import { StoreStates } from '../app/store-reuse.js';
import { UsageError } from '../errors.js';
import { type CommandSpec, parseFlags, printUsage } from './flags.js';
import { openStoreTiers } from './store-flags.js';

const STORE_COMMAND_FLAGS = {
  store: { type: 'string', value: 'SPEC', help: 'the store: dir:PATH (memory lives only inside one process), or a comma list front first' },
  json: { type: 'boolean', help: 'print JSON' },
} as const;

const ACTIONS = ['stats', 'list', 'clear'] as const;

/**
 * `kvcompact store`: its flags and help.
 *
 * @example
 * ```ts
 * printUsage(STORE_COMMAND);
 * ```
 */
export const STORE_COMMAND: CommandSpec<typeof STORE_COMMAND_FLAGS> = {
  name: 'store',
  summary: 'saved compressed states: store stats|list|clear --store dir:PATH',
  details: 'stats: entries and bytes per tier; list: every entry (key, tier, bytes, tokens, pinned, expiry); clear: deletes them all.',
  flags: STORE_COMMAND_FLAGS,
};

/**
 * `kvcompact store stats|list|clear --store SPEC [--json]`.
 *
 * @example
 * ```ts
 * process.exitCode = await storeCommand(['list', '--store', 'dir:.kvcompact/store', '--json']);
 * ```
 */
export async function storeCommand(argv: string[]): Promise<number> {
  const [action, ...rest] = argv;
  if (action === undefined || action === '--help' || action === '-h') return printUsage(STORE_COMMAND);
  if (!(ACTIONS as readonly string[]).includes(action)) throw new UsageError('kvcompact store', `unknown action "${action}"; use ${ACTIONS.join(', ')}`);
  const values = parseFlags(STORE_COMMAND, rest);
  if (values === 'help') return printUsage(STORE_COMMAND);
  if (values.store === undefined) throw new UsageError('--store', 'is required: the store to read (dir:PATH)');
  // Listing and clearing do not depend on a model: the keys are opaque, whatever namespace made them.
  const store = new StoreStates({ tiers: await openStoreTiers(values.store), modelFingerprint: 'any', tenantSalt: '' });
  const out = (json: unknown, text: string): void => void process.stdout.write(values.json ? `${JSON.stringify(json, null, 2)}\n` : text);
  try {
    await storeAction(action, store, out);
  } finally {
    await store.close();
  }
  return 0;
}

async function storeAction(action: string, store: StoreStates, out: (json: unknown, text: string) => void): Promise<void> {
  if (action === 'clear') {
    const deleted = await store.clear();
    out({ deleted }, `deleted ${deleted} entries\n`);
  } else if (action === 'list') {
    const entries = await store.list();
    out(
      { entries },
      entries.length === 0
        ? 'no entries\n'
        : `${entries.map((e) => `${e.key.slice(0, 16)}…  ${e.tier.padEnd(10)} ${String(e.bytes ?? '?').padStart(10)} bytes  ${String(e.tokens ?? '?').padStart(6)} tokens${e.pinned ? '  pinned' : ''}`).join('\n')}\n`,
    );
  } else {
    const { tiers } = await store.stats();
    out(
      { tiers },
      `${tiers.map((t) => `${t.name}: ${t.entries} entries, ${t.bytes} bytes (${t.pinnedEntries} pinned)`).join('\n')}\n`,
    );
  }
}
