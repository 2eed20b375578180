import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../src/errors.js';
import { roundToF16, unpack2x16float } from '../src/format/f16.js';
import { gpuWeightBytes, packF16Rows } from '../src/model/gpu-llama.js';
import { parseHfConfig } from '../src/model/hf/config.js';

describe('f16 weight upload layout (host side)', () => {
  it.each([
    [1, 1],
    [3, 63],
    [2, 65],
    [1, 4097],
  ])('packF16Rows of %i × %i: ⌈cols/2⌉ words per row, each element rounded to f16, odd tail paired with 0', (rows, cols) => {
    const data = Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i * 0.37) * 3 + (i % 7) * 1e-3);
    const words = packF16Rows(data, rows, cols, 'w');
    const perRow = Math.ceil(cols / 2);
    expect(words).toHaveLength(rows * perRow);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const [lo, hi] = unpack2x16float(words[r * perRow + (c >> 1)] as number);
        expect(c % 2 === 0 ? lo : hi).toBe(roundToF16(data[r * cols + c] as number));
      }
      if (cols % 2 === 1) expect(unpack2x16float(words[r * perRow + perRow - 1] as number)[1]).toBe(0);
    }
  });

  it('a weight outside the f16 range is named, not turned into ∞', () => {
    expect(() => packF16Rows(Float32Array.of(1, 2, 70000, 4), 2, 2, 'model.layers.0.mlp.down_proj.weight')).toThrow(InvalidArgumentError);
    expect(() => packF16Rows(Float32Array.of(1, 2, 70000, 4), 2, 2, 'wq')).toThrow(/wq: element \[1, 0\] = 70000 is outside the f16 range/);
    expect(() => packF16Rows(new Float32Array(3), 2, 2, 'wq')).toThrow(/expected rows 2 × cols 2/);
  });

  it('SmolLM2-135M: 538 MB of f32 weights, 269 MB in f16 (the figures of docs/hf-models.md)', () => {
    const { llama } = parseHfConfig(
      JSON.stringify({
        architectures: ['LlamaForCausalLM'],
        hidden_size: 576,
        intermediate_size: 1536,
        num_hidden_layers: 30,
        num_attention_heads: 9,
        num_key_value_heads: 3,
        head_dim: 64,
        vocab_size: 49152,
        max_position_embeddings: 8192,
        tie_word_embeddings: true,
      }),
    );
    expect(gpuWeightBytes(llama, 'f32')).toBe(4 * 134_515_008);
    // f16 halves the matrices; the 61 RMSNorm weights (35,136 floats) stay f32.
    expect(gpuWeightBytes(llama, 'f16')).toBe(2 * (134_515_008 - 61 * 576) + 4 * 61 * 576);
  });
});
