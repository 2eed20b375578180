/**
 * Typed errors. Each says what went wrong and what to do about it, so a caller can branch on the class
 * (`err instanceof OutOfBlocksError`) and a person can act on the message.
 *
 * @example
 * ```ts
 * try { cache.append(seq, k, v); }
 * catch (err) { if (err instanceof OutOfBlocksError) await cache.compress(seq, { ratio: 4 }); else throw err; }
 * ```
 */
export class KvCompactError extends Error {
  override name = 'KvCompactError';
}

/**
 * No WebGPU adapter could be found. The message says how to get one.
 *
 * @example
 * ```ts
 * const gpu = await createNodeGpu({ adapter: 'hardware' }).catch((err) => {
 *   if (err instanceof NoAdapterError) return createNodeGpu({ adapter: 'software' });
 *   throw err;
 * });
 * ```
 */
export class NoAdapterError extends KvCompactError {
  override name = 'NoAdapterError';
}

/**
 * The GPU device was lost (driver reset, out of memory, tab backgrounded) while we did not destroy it ourselves.
 *
 * @example
 * ```ts
 * const lost = await gpu.lost; // DeviceLostError, or null after destroy()
 * if (lost) console.error(lost.reason, lost.message);
 * ```
 */
export class DeviceLostError extends KvCompactError {
  override name = 'DeviceLostError';
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(`GPU device lost (${reason}): ${message}. Create a new context; GPU buffers of the old one are gone.`);
  }
}

/**
 * A size or count is past what the device (or the engine) allows. Raised before anything is submitted.
 *
 * @example
 * ```ts
 * throw new LimitExceededError('maxBufferSize', 3e9, 2e9); // "maxBufferSize exceeded: 3000000000 > 2000000000"
 * ```
 */
export class LimitExceededError extends KvCompactError {
  override name = 'LimitExceededError';
  constructor(
    readonly limit: string,
    readonly value: number,
    readonly maximum: number,
    hint = '',
  ) {
    super(`${limit} exceeded: ${value} > ${maximum}${hint ? `. ${hint}` : ''}`);
  }
}

/**
 * An argument has the wrong value, shape, type or dtype. `field` names it.
 *
 * @example
 * ```ts
 * throw new InvalidArgumentError('budget', 'must be positive'); // message "budget: must be positive"
 * ```
 */
export class InvalidArgumentError extends KvCompactError {
  override name = 'InvalidArgumentError';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

/**
 * A GPU buffer lacks a usage flag the operation needs.
 *
 * @example
 * ```ts
 * requireUsage(readback, GPUBufferUsage.STORAGE, 'scores'); // throws BufferUsageError: ... lacks usage STORAGE
 * ```
 */
export class BufferUsageError extends KvCompactError {
  override name = 'BufferUsageError';
}

/**
 * The block pool has no free block left. Compress, free a sequence, or grow the pool (within its byte budget).
 *
 * @example
 * ```ts
 * try { await cache.append(seq, keys, values); }
 * catch (err) { if (err instanceof OutOfBlocksError) console.log(`need ${err.needed}, ${err.free} free`); else throw err; }
 * ```
 */
export class OutOfBlocksError extends KvCompactError {
  override name = 'OutOfBlocksError';
  constructor(
    /** The pool that ran out: 'full' (where tokens land) or 'quant' (compressed blocks). */
    readonly pool: 'full' | 'quant',
    readonly needed: number,
    readonly free: number,
    hint = 'free or compress a sequence, or grow the pool within its byte budget',
  ) {
    super(`out of KV blocks in the ${pool === 'full' ? 'full' : 'quantized'} pool: need ${needed}, ${free} free; ${hint}`);
  }
}

/**
 * A sequence id that the cache does not know.
 *
 * @example
 * ```ts
 * cache.freeSequence(42); // throws UnknownSequenceError: unknown sequence 42: add it with addSequence() first, ...
 * ```
 */
export class UnknownSequenceError extends KvCompactError {
  override name = 'UnknownSequenceError';
  constructor(readonly seqId: number) {
    super(`unknown sequence ${seqId}: add it with addSequence() first, or it was already freed`);
  }
}

/**
 * K or V values contain NaN or ±Inf; the cache rejects them and stays as it was.
 *
 * @example
 * ```ts
 * await cache.append(seq, new Float32Array([NaN, 0, 0, 0]), values); // throws NonFiniteValueError; cache unchanged
 * ```
 */
export class NonFiniteValueError extends KvCompactError {
  override name = 'NonFiniteValueError';
}

/**
 * A llama2.c checkpoint or tokenizer file is truncated, oversized or inconsistent.
 *
 * @example
 * ```ts
 * parseCheckpoint(new Uint8Array(12)); // throws ModelFormatError: checkpoint header truncated: expected 28 bytes, ...
 * ```
 */
export class ModelFormatError extends KvCompactError {
  override name = 'ModelFormatError';
}

/**
 * A compression policy name that is not in the registry.
 *
 * @example
 * ```ts
 * createPolicy('lru'); // throws UnknownPolicyError: unknown policy "lru"; known policies: ...
 * ```
 */
export class UnknownPolicyError extends KvCompactError {
  override name = 'UnknownPolicyError';
  constructor(
    readonly policy: string,
    readonly known: readonly string[],
  ) {
    super(`unknown policy "${policy}"; known policies: ${known.join(', ')}`);
  }
}

/**
 * WebGPU reported a validation or out-of-memory error inside an error scope.
 *
 * @example
 * ```ts
 * await gpu.withErrorScope(() => encodeBadDispatch()); // throws GpuValidationError with WebGPU's message
 * ```
 */
export class GpuValidationError extends KvCompactError {
  override name = 'GpuValidationError';
}

/**
 * A window policy (SnapKV, TOVA) was asked to compress a sequence whose observation window holds no query: it
 * scores tokens by the attention of the newest queries, and plain `append` records none.
 *
 * @example
 * ```ts
 * await cache.append(seq, keys, values);
 * await cache.compress(seq, { policy: 'snapkv', budget: 64 }); // throws: run the model through beginStep/encodeLayer
 * await cache.compress(seq, { budget: 64 });                   // fine: the default policy then is knorm
 * ```
 */
export class MissingObservationWindowError extends KvCompactError {
  override name = 'MissingObservationWindowError';
  constructor(readonly policy: string) {
    super(
      `policy "${policy}" scores with the observation window's queries, but this sequence has none: plain append() ` +
        'records no queries; decode or prefill through the attention backend (beginStep/encodeLayer, or a model ' +
        'runner) to fill it, or use a policy that needs no queries (knorm, streaming, random, or leave policy unset)',
    );
  }
}

/**
 * The cache was destroyed: work queued or in flight when `destroy()` ran, and every later call, is rejected with
 * this error, and nothing of the cache survives. Create a new cache.
 *
 * @example
 * ```ts
 * const pending = cache.compress(seq, { budget: 64 });
 * cache.destroy();
 * await pending; // rejects with CacheDestroyedError
 * ```
 */
export class CacheDestroyedError extends KvCompactError {
  override name = 'CacheDestroyedError';
  constructor(what = 'this cache') {
    super(`${what} was destroyed; create a new cache (pending and later operations are rejected)`);
  }
}

/**
 * A model runner's step (beginStep, or the CPU engine's step), a synchronous read (the CPU engine's attend and
 * readHead) or addSequence of an id whose free is still queued was started on a sequence that still has operations
 * queued or in flight (an un-awaited append, compress, fork or free): it would race them. Await them first.
 *
 * @example
 * ```ts
 * const done = cache.compress(seq, { budget: 64 });
 * cache.beginStep(seq, 1); // throws SequenceBusyError
 * await done;
 * cache.beginStep(seq, 1); // fine
 * ```
 */
export class SequenceBusyError extends KvCompactError {
  override name = 'SequenceBusyError';
  constructor(readonly seqId: number) {
    super(`sequence ${seqId} has operations queued or in flight; await them first (a model step, addSequence of the same id and the CPU engine's attend/readHead are synchronous and cannot wait)`);
  }
}

/**
 * `truncate(seq, length)` would cut among tokens that went through compression: their original positions are no
 * longer known on the host once a compaction evicted some of them, and a quantized block must stay full. Tokens
 * appended since a sequence's last compression can always be truncated (what speculative decoding rolls back);
 * truncate to at least `minLength`, or compress later.
 *
 * @example
 * ```ts
 * try { await cache.truncate(seq, 10); }
 * catch (err) { if (err instanceof TruncateCompressedError) await cache.truncate(seq, err.minLength); }
 * ```
 */
export class TruncateCompressedError extends KvCompactError {
  override name = 'TruncateCompressedError';
  constructor(
    readonly seqId: number,
    readonly length: number,
    /** The shortest length this truncate could keep. */
    readonly minLength: number,
    why: string,
  ) {
    super(`cannot truncate sequence ${seqId} to ${length} tokens: ${why}; truncate to ${minLength} tokens or more`);
  }
}

/**
 * The cache's host metadata broke an invariant (see `checkInvariants`): a bug in kvcompact, or code that edited
 * the block tables or pools directly. `problems` lists every violation; report them.
 *
 * @example
 * ```ts
 * try { assertInvariants(cache.meta); }
 * catch (err) { if (err instanceof CacheInvariantError) console.error(err.problems.join('\n')); }
 * ```
 */
export class CacheInvariantError extends KvCompactError {
  override name = 'CacheInvariantError';
  constructor(readonly problems: readonly string[]) {
    super(
      `KV cache metadata is inconsistent (a bug; please report it with these lines):\n${problems.slice(0, 20).join('\n')}` +
        (problems.length > 20 ? `\n… and ${problems.length - 20} more` : ''),
    );
  }
}

/**
 * A checkpoint weight is NaN or ±Inf: the file is corrupt (or exported from a diverged run) and would generate
 * garbage. `tensor` and `index` (flat, in file order) say where the first one is.
 *
 * @example
 * ```ts
 * try { parseCheckpoint(bytes); }
 * catch (err) { if (err instanceof NonFiniteWeightsError) console.error(`${err.tensor}[${err.index}] = ${err.value}`); }
 * ```
 */
export class NonFiniteWeightsError extends ModelFormatError {
  override name = 'NonFiniteWeightsError';
  constructor(
    readonly tensor: string,
    readonly index: number,
    readonly value: number,
  ) {
    super(
      `checkpoint tensor ${tensor} holds a non-finite weight (${value}) at index ${index}: the file is corrupt or ` +
        'was exported from a diverged training run; re-download or re-export it',
    );
  }
}

/**
 * A command-line flag, its value or a command name is wrong. The CLI prints the message and exits with status 2.
 *
 * @example
 * ```ts
 * throw new UsageError('--window', '100000 is past the model context of 512 tokens'); // exit status 2
 * ```
 */
export class UsageError extends InvalidArgumentError {
  override name = 'UsageError';
}

/**
 * A file of a Hugging Face model folder (safetensors header, `config.json`, `model.safetensors.index.json`,
 * `tokenizer.json`) is malformed or describes something the engine cannot run. `file` and `field` name where.
 * Raised while reading headers and configs, before any tensor is read or any GPU work starts.
 *
 * @example
 * ```ts
 * try { await loadHfModel(folder); }
 * catch (err) { if (err instanceof HfModelError) console.error(`fix ${err.file} (${err.field})`); else throw err; }
 * ```
 */
export class HfModelError extends ModelFormatError {
  override name = 'HfModelError';
  constructor(
    readonly file: string,
    readonly field: string,
    message: string,
  ) {
    super(`${file}: ${field}: ${message}`);
  }
}

/**
 * A tensor's dtype is one the loader does not convert (it reads F32, F16 and BF16). Re-export the checkpoint in
 * one of those (e.g. `model.to(torch.float16).save_pretrained(dir)`); quantized checkpoints are not supported.
 *
 * @example
 * ```ts
 * // model.safetensors: model.embed_tokens.weight.dtype: F64 is not supported; ...
 * if (err instanceof UnsupportedDtypeError) console.error(err.dtype);
 * ```
 */
export class UnsupportedDtypeError extends HfModelError {
  override name = 'UnsupportedDtypeError';
  constructor(
    file: string,
    readonly tensor: string,
    readonly dtype: string,
  ) {
    super(
      file,
      `${tensor}.dtype`,
      `${dtype} is not supported; supported dtypes are F32, F16 and BF16 (re-save the model in one of them)`,
    );
  }
}

/**
 * `config.json` names an architecture the engine does not run. `known` lists those it does.
 *
 * @example
 * ```ts
 * // config.json: architectures: GPT2LMHeadModel is not supported; supported: LlamaForCausalLM, ...
 * ```
 */
export class UnknownArchitectureError extends HfModelError {
  override name = 'UnknownArchitectureError';
  constructor(
    file: string,
    readonly architecture: string,
    readonly known: readonly string[],
  ) {
    super(file, 'architectures', `${architecture} is not supported; supported: ${known.join(', ')}`);
  }
}

/**
 * A tensor the architecture needs is in none of the model's safetensors files (or in another file than the
 * index says).
 *
 * @example
 * ```ts
 * // model.safetensors: model.layers.3.mlp.up_proj.weight: missing; the checkpoint is incomplete or not a ...
 * ```
 */
export class MissingTensorError extends HfModelError {
  override name = 'MissingTensorError';
  constructor(
    file: string,
    readonly tensor: string,
    hint = 'the checkpoint is incomplete (re-download it) or of another architecture than config.json says',
  ) {
    super(file, tensor, `missing; ${hint}`);
  }
}

/**
 * Why a saved cache entry was refused. Every reason is a miss, never data: the caller recomputes the prefix.
 * - `length`: fewer or more bytes than the entry declares (truncated write, partial read);
 * - `magic`: not a kvcompact store entry at all;
 * - `version`: written by another container version of kvcompact;
 * - `checksum`: the bytes changed after they were written (bit rot, a torn write, tampering);
 * - `header`: the header is not the JSON the container defines;
 * - `section`: a section lies outside the entry, overlaps another, or is missing;
 * - `layout`, `fingerprint`, `shape`, `settings`, `tokens`: a well-formed entry of another cache layout version,
 *   model, cache shape, compression settings or prefix length than the caller expects;
 * - `snapshot`: the container is sound but the sequence snapshot inside it is not (a section of the wrong length, a
 *   block index out of range, counts that disagree).
 */
export type StoreEntryReason =
  | 'length'
  | 'magic'
  | 'version'
  | 'checksum'
  | 'header'
  | 'section'
  | 'layout'
  | 'fingerprint'
  | 'shape'
  | 'settings'
  | 'tokens'
  | 'snapshot';

/**
 * A saved cache entry cannot be used. `reason` says why (see {@link StoreEntryReason}); the store counts it as a
 * miss and the caller computes the prefix again (and may save it again, replacing the bad entry).
 *
 * @example
 * ```ts
 * const entry = await decodeStoreEntry(bytes, { fingerprint }).catch((err) => {
 *   if (err instanceof StoreEntryError) { stats.miss(err.reason); return null; }
 *   throw err;
 * });
 * ```
 */
export class StoreEntryError extends KvCompactError {
  override name = 'StoreEntryError';
  constructor(
    readonly reason: StoreEntryReason,
    detail: string,
  ) {
    super(`store entry refused (${reason}): ${detail}. Treat it as a miss: recompute the prefix and save it again.`);
  }
}

/**
 * A sequence snapshot does not fit the cache it is imported into (or is not self-consistent). `field` names what
 * differs, with what the snapshot has and what the cache (or the rest of the snapshot) expects. The cache is
 * unchanged: import into a cache of the snapshot's shape and formats, or recompute the sequence.
 *
 * @example
 * ```ts
 * try { await cache.importSequence(9, snapshot); }
 * catch (err) { if (err instanceof SnapshotMismatchError) console.log(err.field, err.got, err.expected); else throw err; }
 * ```
 */
export class SnapshotMismatchError extends KvCompactError {
  override name = 'SnapshotMismatchError';
  constructor(
    readonly field: string,
    readonly got: string | number,
    readonly expected: string | number,
  ) {
    super(`snapshot ${field}: got ${got}, expected ${expected}; import it into a cache of the snapshot's shape and formats, or recompute the sequence`);
  }
}
