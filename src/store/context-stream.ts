/**
 * What a cache holds, as the sequence of operations that built it, and the store keys of its states.
 *
 * A compressed cache is not a function of its tokens alone: prefilling 100 tokens in one chunk and compressing at
 * the first decode step leaves another state than decoding the last 40 of them one by one (the decode schedule
 * compresses between steps) or than compressing after the first 60 (cache-augmented generation compresses the
 * knowledge before the question). So a key hashes the operations, not just the token ids:
 *
 *   - `prefill` segments: tokens appended in chunks; nothing compresses inside a prefill, so splitting one into
 *     chunks leaves the same state (adjacent prefill segments are one segment);
 *   - `decode` segments: tokens appended one by one, each step preceded by the decode schedule, which may compress
 *     (adjacent decode segments are one segment);
 *   - `compress`: an explicit compression to the budget at this point (the knowledge boundary of cag).
 *
 * The chain, as vLLM chains block hashes (src/store/keys.ts): H_0 = the namespace hash; a link ends after every
 * token whose position + 1 is a multiple of the block size, at the end of every segment and at the end of the
 * stream; H_i = SHA-256(H_{i−1} ‖ kind byte ‖ the link's token ids as little-endian u32). The key of the state
 * after a link is hex(H_i). Equal keys mean equal operations under equal settings, so an entry is valid for every
 * continuation of its stream. Two requests share the block-boundary states of a common prompt prefix (vLLM's
 * prefix sharing) and the segment-end states of a common history (a chat's previous turn, cag's knowledge).
 */
import { InvalidArgumentError } from '../errors.js';
import { toHex } from './canonical.js';
import { sha256Sync } from './sha256.js';
import { namespaceHash, type StoreNamespace } from './keys.js';

/** One operation on a sequence's cache. */
export type ContextSegment =
  | { readonly kind: 'prefill'; readonly tokens: readonly number[] }
  | { readonly kind: 'decode'; readonly tokens: readonly number[] }
  | { readonly kind: 'compress' };

/** A cache's history: the operations, oldest first. */
export type ContextStream = readonly ContextSegment[];

/** The key of one state of a stream. */
export interface StreamLink {
  /** hex(H_i): the store key of the state after this link. */
  readonly key: string;
  /** Tokens in the cache after this link (its sequence length). */
  readonly tokens: number;
  /** The stream up to and including this link, normalized: what a restored entry continues from. */
  readonly segmentsUpTo: ContextStream;
  /** The link ends its segment (a prompt's end, a decode run's end, a compression), not just a block. */
  readonly segmentEnd: boolean;
}

/** Every state of a stream that has a key, shortest first. */
export interface StreamChain {
  /** hex(H_0). */
  readonly namespace: string;
  readonly blockSize: number;
  readonly links: readonly StreamLink[];
}

const KIND_BYTE: Record<ContextSegment['kind'], number> = { prefill: 1, decode: 2, compress: 3 };

function checkTokens(tokens: readonly number[], where: string): void {
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i] as number;
    if (!Number.isInteger(token) || token < 0 || token > 0xffffffff) {
      throw new InvalidArgumentError(`${where}[${i}]`, `must be an integer in [0, 2^32); got ${token}`);
    }
  }
}

/**
 * The stream with adjacent segments of one kind joined, empty token segments and repeated compressions dropped:
 * two streams that leave the same state by construction normalize to the same segments.
 *
 * @throws InvalidArgumentError for an unknown kind or a token id that is not an integer in [0, 2³²).
 */
export function normalizeStream(stream: ContextStream): ContextSegment[] {
  const out: ContextSegment[] = [];
  stream.forEach((segment, index) => {
    const last = out[out.length - 1];
    if (segment.kind === 'compress') {
      if (last?.kind !== 'compress') out.push({ kind: 'compress' });
      return;
    }
    if (segment.kind !== 'prefill' && segment.kind !== 'decode') {
      throw new InvalidArgumentError(`stream[${index}].kind`, `must be 'prefill', 'decode' or 'compress'; got ${String((segment as { kind: unknown }).kind)}`);
    }
    checkTokens(segment.tokens, `stream[${index}].tokens`);
    if (segment.tokens.length === 0) return;
    if (last !== undefined && last.kind === segment.kind) out[out.length - 1] = { kind: segment.kind, tokens: [...last.tokens, ...segment.tokens] };
    else out.push({ kind: segment.kind, tokens: [...segment.tokens] });
  });
  return out;
}

/** Tokens a stream appends (its sequence length once replayed). */
export function streamTokens(stream: ContextStream): number {
  let n = 0;
  for (const segment of stream) if (segment.kind !== 'compress') n += segment.tokens.length;
  return n;
}

/** The token ids of a stream in order (what the cache's positions hold). */
export function streamTokenIds(stream: ContextStream): number[] {
  const ids: number[] = [];
  for (const segment of stream) if (segment.kind !== 'compress') ids.push(...segment.tokens);
  return ids;
}

/** The segments before `segmentIndex` and the first `offset` tokens of that segment (all of a compression). */
function sliceSegments(segments: readonly ContextSegment[], segmentIndex: number, offset: number): ContextSegment[] {
  const out = segments.slice(0, segmentIndex);
  const segment = segments[segmentIndex];
  if (segment === undefined) return out;
  if (segment.kind === 'compress') out.push(segment);
  else if (offset > 0) out.push({ kind: segment.kind, tokens: segment.tokens.slice(0, offset) });
  return out;
}

/**
 * The keys of every state of `stream` a store may hold.
 *
 * @throws InvalidArgumentError as {@link normalizeStream}, or for a block size that is not an integer ≥ 1.
 * @example
 * ```ts
 * const chain = await streamChain(namespace, [{ kind: 'prefill', tokens: knowledge }, { kind: 'compress' },
 *   { kind: 'prefill', tokens: question }], 16);
 * // links at every 16 tokens, after the knowledge, after the compression, after the question
 * ```
 */
export async function streamChain(namespace: StoreNamespace, stream: ContextStream, blockSize: number): Promise<StreamChain> {
  let previous = await namespaceHash(namespace, blockSize);
  const namespaceHex = toHex(previous);
  const segments = normalizeStream(stream);
  const links: StreamLink[] = [];
  let position = 0;
  const link = (kind: ContextSegment['kind'], tokens: readonly number[], segmentIndex: number, offset: number, segmentEnd: boolean): void => {
    const input = new Uint8Array(previous.length + 1 + 4 * tokens.length);
    input.set(previous, 0);
    input[previous.length] = KIND_BYTE[kind];
    const view = new DataView(input.buffer);
    tokens.forEach((token, i) => view.setUint32(previous.length + 1 + 4 * i, token, true));
    previous = sha256Sync(input); // short messages: see sha256.ts for why not WebCrypto
    // segmentsUpTo is built when read: built eagerly, every link would copy the stream up to it (quadratic time and
    // memory: a 64K-token prompt has 4,096 links), though a lookup reads it of one link at most.
    let upTo: ContextStream | undefined;
    links.push({
      key: toHex(previous),
      tokens: position,
      get segmentsUpTo(): ContextStream {
        return (upTo ??= sliceSegments(segments, segmentIndex, offset));
      },
      segmentEnd,
    });
  };
  for (let index = 0; index < segments.length; index++) {
    const segment = segments[index] as ContextSegment;
    if (segment.kind === 'compress') {
      link('compress', [], index, 0, true);
      continue;
    }
    let start = 0;
    while (start < segment.tokens.length) {
      const untilBlock = blockSize - (position % blockSize);
      const end = Math.min(segment.tokens.length, start + untilBlock);
      position += end - start;
      link(segment.kind, segment.tokens.slice(start, end), index, end, end === segment.tokens.length);
      start = end;
    }
  }
  return { namespace: namespaceHex, blockSize, links };
}
