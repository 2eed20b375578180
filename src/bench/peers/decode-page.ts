// The page's decode-attention comparison: for each context, kvcompact's paged kernel (and flash-decode where the
// device binds enough storage buffers), onnxruntime-web's GroupQueryAttention on its WebGPU provider and on its
// wasm provider, and the TS reference, all on the same data. ORT is loaded from the URL the driver serves it at.
import type { GpuContext } from '../../gpu/context.js';
import type { FullFormat } from '../../format/layout.js';
import {
  decodeCase,
  type DecodeKv,
  type DecodePageConfig,
  type DecodePageResult,
  type DecodePeerCheck,
  type DecodePeerSkip,
} from './decode-contract.js';
import { type DecodeMeasured, decodeData, referenceDecode, runKvcompactDecode, runReferenceDecode } from './decode.js';
import { createOrtDecodeSession, type OrtKvMode, type OrtModule, runOrtDecode } from './ort.js';

function message(error: unknown): string {
  return error instanceof Error ? error.message.split('\n')[0] ?? error.name : String(error);
}

/**
 * Loads onnxruntime-web from `ortUrl` (the directory of its dist files) and runs every engine at every context.
 *
 * @example
 * ```ts
 * const decode = await runDecodePage(gpu, { contexts: [1024], warmup: 1, runs: 5 }, new URL('./ort/', location.href).href);
 * ```
 */
export async function runDecodePage(gpu: GpuContext, config: DecodePageConfig, ortUrl: string): Promise<DecodePageResult> {
  const entry = `${ortUrl}ort.webgpu.min.mjs`;
  const ort = (await import(/* @vite-ignore */ entry)) as OrtModule;
  ort.env.wasm.wasmPaths = ortUrl;
  // Without cross-origin isolation there is no SharedArrayBuffer; one thread, no proxy worker, said explicitly.
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  ort.env.logLevel = 'error';
  const adapter = await navigator.gpu.requestAdapter();
  const hasF16 = adapter?.features.has('shader-f16') ?? false;
  const rows: DecodeMeasured[] = [];
  const checks: DecodePeerCheck[] = [];
  const skipped: DecodePeerSkip[] = [];
  let webgpuAdapter = 'not created';
  let webgpuFeatures: string[] = [];
  const sessions = new Map<string, Awaited<ReturnType<typeof createOrtDecodeSession>> | Error>();
  const session = async (ep: 'webgpu' | 'wasm', kv: DecodeKv) => {
    const key = `${ep}/${kv}`;
    if (!sessions.has(key)) {
      try {
        sessions.set(key, await createOrtDecodeSession(ort, ep, kv));
        if (ep === 'webgpu') {
          const device = await ort.env.webgpu.device;
          const info = device.adapterInfo;
          webgpuAdapter = [info.vendor, info.architecture, info.description].filter((p) => p).join(' · ');
          webgpuFeatures = [...device.features].sort();
        }
      } catch (error) {
        sessions.set(key, error instanceof Error ? error : new Error(String(error)));
      }
    }
    return sessions.get(key)!;
  };
  const timing = { warmup: config.warmup, runs: config.runs };
  try {
    for (const context of config.contexts) {
      const data = decodeData(context);
      const ref = referenceDecode(data);
      for (const kv of ['f16', 'f32'] as const satisfies readonly FullFormat[]) {
        const name = decodeCase(kv, context);
        const kvc = await runKvcompactDecode(gpu, data, kv, ref, { host: 'chromium', ...timing });
        rows.push(...kvc.rows);
        checks.push(...kvc.checks);
        skipped.push(...kvc.skipped);
        const eps: ('webgpu' | 'wasm')[] = kv === 'f32' ? ['webgpu', 'wasm'] : ['webgpu'];
        for (const ep of eps) {
          const engine = ep === 'webgpu' ? 'onnxruntime-web-webgpu' : 'onnxruntime-web-wasm';
          if (ep === 'webgpu' && kv === 'f16' && !hasF16) {
            skipped.push({
              engine,
              case: name,
              host: 'chromium',
              reason: "float16 tensors need the adapter's shader-f16 feature, which this adapter lacks (float32 rows instead)",
            });
            continue;
          }
          const s = await session(ep, kv);
          if (s instanceof Error) {
            skipped.push({ engine, case: name, host: 'chromium', reason: `session creation failed: ${message(s)}` });
            continue;
          }
          const modes: OrtKvMode[] = ep === 'webgpu' ? ['shared', 'concat'] : ['concat'];
          for (const kvMode of modes) {
            const label = ep === 'webgpu' ? webgpuAdapter : 'cpu (WebAssembly, 1 thread)';
            try {
              const r = await runOrtDecode(ort, s, ep, data, ref, { ...timing, adapter: label, host: 'chromium', kvMode });
              rows.push(...r.rows);
              checks.push(...r.checks);
            } catch (error) {
              const failed = ep === 'webgpu' && kvMode === 'concat' ? 'onnxruntime-web-webgpu-concat' : engine;
              skipped.push({ engine: failed, case: name, host: 'chromium', reason: `run failed: ${message(error)}` });
            }
          }
        }
        rows.push(...(await runReferenceDecode(data, kv, { host: 'chromium', ...timing })));
      }
    }
  } finally {
    for (const s of sessions.values()) if (!(s instanceof Error)) await s.session.release();
  }
  return { rows, checks, skipped, ort: { version: ort.env.versions.web ?? 'unknown', webgpuAdapter, webgpuFeatures } };
}
