import { InvalidArgumentError } from '../errors.js';

/**
 * WGSL scalar and vector types a uniform field may have.
 *
 * @example
 * ```ts
 * const type: UniformType = 'vec2<u32>'; // 8 bytes, 8-aligned
 * const range = new UniformLayout('Range', [{ name: 'range', type }]);
 * ```
 */
export type UniformType = 'u32' | 'i32' | 'f32' | 'vec2<u32>' | 'vec2<f32>' | 'vec4<u32>' | 'vec4<f32>';

/**
 * One field of a uniform struct, in declaration order.
 *
 * @example
 * ```ts
 * const fields: UniformField[] = [{ name: 'count', type: 'u32' }, { name: 'scale', type: 'f32' }];
 * const params = new UniformLayout('Params', fields);
 * ```
 */
export interface UniformField {
  readonly name: string;
  readonly type: UniformType;
}

const TYPE_INFO: Record<UniformType, { size: number; align: number; lanes: number; kind: 'u32' | 'i32' | 'f32' }> = {
  u32: { size: 4, align: 4, lanes: 1, kind: 'u32' },
  i32: { size: 4, align: 4, lanes: 1, kind: 'i32' },
  f32: { size: 4, align: 4, lanes: 1, kind: 'f32' },
  'vec2<u32>': { size: 8, align: 8, lanes: 2, kind: 'u32' },
  'vec2<f32>': { size: 8, align: 8, lanes: 2, kind: 'f32' },
  'vec4<u32>': { size: 16, align: 16, lanes: 4, kind: 'u32' },
  'vec4<f32>': { size: 16, align: 16, lanes: 4, kind: 'f32' },
};

/**
 * A uniform struct described once in TS: it generates the WGSL declaration (for the prelude) and packs values
 * with WGSL's alignment rules, so the two can never disagree.
 *
 * @example
 * ```ts
 * const params = new UniformLayout('Params', [{ name: 'count', type: 'u32' }, { name: 'scale', type: 'f32' }]);
 * params.wgsl();                          // "struct Params {\n  count: u32,\n  scale: f32,\n}"
 * params.pack({ count: 5, scale: 0.5 }); // 16 bytes (uniform structs round up to 16)
 * ```
 */
export class UniformLayout<Name extends string = string> {
  readonly offsets: ReadonlyMap<string, number>;
  /** Byte size of the struct, rounded up to 16 as uniform buffers require. */
  readonly byteSize: number;

  constructor(
    readonly structName: string,
    readonly fields: readonly (UniformField & { name: Name })[],
  ) {
    const offsets = new Map<string, number>();
    let offset = 0;
    let maxAlign = 4;
    for (const field of fields) {
      if (offsets.has(field.name)) throw new InvalidArgumentError('fields', `duplicate uniform ${field.name}`);
      const info = TYPE_INFO[field.type];
      offset = Math.ceil(offset / info.align) * info.align;
      offsets.set(field.name, offset);
      offset += info.size;
      maxAlign = Math.max(maxAlign, info.align);
    }
    this.offsets = offsets;
    this.byteSize = Math.max(16, Math.ceil(offset / Math.max(16, maxAlign)) * Math.max(16, maxAlign));
  }

  /** The WGSL struct declaration. */
  wgsl(): string {
    const body = this.fields.map((field) => `  ${field.name}: ${field.type},`).join('\n');
    return `struct ${this.structName} {\n${body}\n}`;
  }

  /** Packs values into a fresh ArrayBuffer of `byteSize` bytes. Every field must be given and finite. */
  pack(values: Readonly<Record<Name, number | readonly number[]>>): ArrayBuffer {
    const buffer = new ArrayBuffer(this.byteSize);
    const view = new DataView(buffer);
    for (const field of this.fields) {
      const info = TYPE_INFO[field.type];
      const raw: number | readonly number[] | undefined = values[field.name];
      const lanes: readonly number[] | undefined = typeof raw === 'number' ? [raw] : raw;
      if (lanes === undefined || lanes.length !== info.lanes) {
        throw new InvalidArgumentError(`uniform ${field.name}`, `expected ${info.lanes} value(s) for ${field.type}`);
      }
      const base = this.offsets.get(field.name) ?? 0;
      lanes.forEach((value: number, lane: number) => {
        const at = base + lane * 4;
        if (info.kind === 'f32') {
          view.setFloat32(at, value, true);
          return;
        }
        const bound = info.kind === 'u32' ? [0, 0xffff_ffff] : [-0x8000_0000, 0x7fff_ffff];
        if (!Number.isInteger(value) || value < (bound[0] ?? 0) || value > (bound[1] ?? 0)) {
          throw new InvalidArgumentError(`uniform ${field.name}`, `${value} is not a valid ${info.kind}`);
        }
        if (info.kind === 'u32') view.setUint32(at, value, true);
        else view.setInt32(at, value, true);
      });
    }
    return buffer;
  }
}
