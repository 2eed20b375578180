/** The words both the Node test and the smoke page copy, so their outputs can be compared byte for byte. */
export function smokeInput(words: number): Uint32Array {
  const out = new Uint32Array(words);
  let state = 0x9e3779b9;
  for (let i = 0; i < words; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    out[i] = state;
  }
  return out;
}

/** Sizes the smoke test copies: awkward ones, as everywhere. */
export const SMOKE_SIZES = [1, 63, 65, 4097] as const;
