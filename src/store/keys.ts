/**
 * Store keys: chained block hashes, as vLLM's prefix cache keys its blocks.
 *
 *   H_0 = SHA-256(canonical JSON of the namespace: model fingerprint, cache format version, block size, every
 *         setting that changes the cached state, tenant salt)
 *   H_i = SHA-256(H_{i−1} ‖ token ids of block i as little-endian u32), over the FULL blocks of the stream
 *
 * The key of a prefix of i full blocks is hex(H_i). It depends on every token before it and on the namespace, so
 * equal keys mean an equal prefix under equal settings, and a key reveals no token (SHA-256 is one-way; the
 * tenant salt, kept secret, also stops a dictionary of likely prompts from being hashed and compared). A
 * compressed cache is a function of the prefix AND the compression settings, which is why the settings are in
 * H_0: vLLM and LMCache key only the tokens, which is right for an uncompressed cache only.
 */
import { InvalidArgumentError } from '../errors.js';
import { canonicalJson, sha256, toHex, type JsonValue } from './canonical.js';

/**
 * Version of what a saved entry holds; part of every key, so entries of another version are never looked up.
 * Raise it whenever the meaning of saved state changes.
 */
export const CACHE_FORMAT_VERSION = 1;

/**
 * Every setting that changes the state a compressed cache is in after a prefix. All are required (null where
 * a setting does not apply) so that a caller cannot forget one and share entries across settings.
 */
export interface CacheStateSettings {
  /** Compression policy name ('none' when the cache is not compressed). */
  readonly policy: string;
  readonly budgetMode: string | null;
  /** Average tokens per KV head the cache keeps; null never evicts. */
  readonly budget: number | null;
  /** Bits of quantized blocks (16 or 32: not quantized). */
  readonly bits: number;
  readonly sinks: number | null;
  readonly recent: number | null;
  /** SnapKV/TOVA observation window. */
  readonly window: number | null;
  /** The resolved decode schedule (mode, every, slack, target, …), or null when decoding never compresses. */
  readonly decodeSchedule: JsonValue;
  /** Any further setting that changes the cached state (a new policy's parameter), hashed like the rest. */
  readonly extra?: { readonly [name: string]: JsonValue };
}

/**
 * What H_0 hashes.
 *
 * @example
 * ```ts
 * const namespace: StoreNamespace = {
 *   modelFingerprint: 'sha256:9f86d0…', // of the checkpoint bytes, or an id the caller vouches for
 *   settings: { policy: 'snapkv', budgetMode: 'uniform', budget: 64, bits: 4, sinks: 4, recent: 16, window: 16, decodeSchedule: null },
 *   tenantSalt: 'tenant-a:1c7e…', // secret per tenant: another salt, other keys
 * };
 * ```
 */
export interface StoreNamespace {
  readonly modelFingerprint: string;
  readonly settings: CacheStateSettings;
  readonly tenantSalt: string;
  /** Default {@link CACHE_FORMAT_VERSION}. */
  readonly formatVersion?: number;
}

/** The keys of one token stream: `keys[i]` = hex(H_{i+1}) covers the first (i + 1) × blockSize tokens. */
export interface PrefixChain {
  /** hex(H_0): shared by every stream of the namespace; not itself the key of any entry. */
  readonly namespace: string;
  readonly blockSize: number;
  readonly keys: readonly string[];
}

/** The longest saved prefix {@link longestSavedPrefix} found. */
export interface SavedPrefix {
  readonly key: string;
  /** Full blocks the prefix covers. */
  readonly blocks: number;
  /** Tokens the prefix covers: blocks × blockSize. */
  readonly tokens: number;
}

function checkBlockSize(blockSize: number): void {
  if (!Number.isInteger(blockSize) || blockSize < 1) throw new InvalidArgumentError('blockSize', `must be an integer ≥ 1; got ${blockSize}`);
}

/**
 * H_0 of a namespace for a block size, as raw bytes.
 *
 * @throws InvalidArgumentError for an empty fingerprint, a bad block size, or settings JSON cannot hold.
 */
export async function namespaceHash(namespace: StoreNamespace, blockSize: number): Promise<Uint8Array> {
  checkBlockSize(blockSize);
  if (namespace.modelFingerprint === '') throw new InvalidArgumentError('modelFingerprint', 'must not be empty (the sha256 of the checkpoint, or an id naming it)');
  const canonical = canonicalJson(
    {
      kind: 'kvcompact-prefix',
      modelFingerprint: namespace.modelFingerprint,
      formatVersion: namespace.formatVersion ?? CACHE_FORMAT_VERSION,
      blockSize,
      settings: namespace.settings,
      tenantSalt: namespace.tenantSalt,
    },
    'namespace',
  );
  return sha256(new TextEncoder().encode(canonical));
}

/**
 * The chain of keys of `tokens`: one per FULL block (a trailing partial block has no key; it is always
 * prefilled). The prefix property holds: the chain of a prefix is a prefix of the chain.
 *
 * @throws InvalidArgumentError for a token id that is not an integer in [0, 2³²).
 * @example
 * ```ts
 * const chain = await prefixChain(namespace, promptTokens, 16); // 100 tokens → 6 keys, the last covers 96
 * ```
 */
export async function prefixChain(namespace: StoreNamespace, tokens: ArrayLike<number>, blockSize: number): Promise<PrefixChain> {
  let previous = await namespaceHash(namespace, blockSize);
  const namespaceHex = toHex(previous);
  const blocks = Math.floor(tokens.length / blockSize);
  const input = new Uint8Array(previous.length + 4 * blockSize);
  const view = new DataView(input.buffer);
  const keys: string[] = [];
  for (let block = 0; block < blocks; block++) {
    input.set(previous, 0);
    for (let i = 0; i < blockSize; i++) {
      const index = block * blockSize + i;
      const token = tokens[index] as number;
      if (!Number.isInteger(token) || token < 0 || token > 0xffffffff) {
        throw new InvalidArgumentError(`tokens[${index}]`, `must be an integer in [0, 2^32); got ${token}`);
      }
      view.setUint32(previous.length + 4 * i, token, true);
    }
    previous = await sha256(input);
    keys.push(toHex(previous));
  }
  return { namespace: namespaceHex, blockSize, keys };
}

/**
 * The longest prefix of `chain` whose key `has` holds, or null when none is saved. Looks from the longest down
 * and stops at the first hit: entries are saved at chosen block boundaries and evicted one by one, so a saved
 * long prefix does not imply its shorter ones, nor the other way round (no binary search).
 *
 * @example
 * ```ts
 * const saved = await longestSavedPrefix(chain, (key) => tier.has(key));
 * const prefill = saved ? tokens.slice(saved.tokens) : tokens;
 * ```
 */
export async function longestSavedPrefix(
  chain: PrefixChain,
  has: (key: string) => boolean | Promise<boolean>,
): Promise<SavedPrefix | null> {
  for (let i = chain.keys.length - 1; i >= 0; i--) {
    const key = chain.keys[i] as string;
    if (await has(key)) return { key, blocks: i + 1, tokens: (i + 1) * chain.blockSize };
  }
  return null;
}
