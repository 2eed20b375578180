import { CopyKernel } from '../../src/kernels/cache/copy.js';
import { GpuContext, createStorageBuffer, readBuffer } from '../../src/index.js';
import { SMOKE_SIZES, smokeInput } from './smoke-data.js';

/** Result the Playwright test reads from the page. */
interface SmokeResult {
  adapter?: GpuContext['adapter'];
  outputs?: Record<number, number[]>;
  error?: string;
}

async function run(): Promise<SmokeResult> {
  const gpu = await GpuContext.fromNavigator();
  try {
    const kernel = new CopyKernel(gpu);
    const outputs: Record<number, number[]> = {};
    for (const words of SMOKE_SIZES) {
      const src = createStorageBuffer(gpu, 'src', smokeInput(words));
      const dst = createStorageBuffer(gpu, 'dst', words * 4);
      kernel.run(src, dst, words);
      outputs[words] = [...new Uint32Array(await readBuffer(gpu, dst, 0, words * 4))];
      src.destroy();
      dst.destroy();
    }
    return { adapter: gpu.adapter, outputs };
  } finally {
    await gpu.destroy();
  }
}

const status = document.getElementById('status');
const target = window as unknown as { __smoke?: SmokeResult };
run().then(
  (result) => {
    target.__smoke = result;
    if (status) status.textContent = `copy kernel ran on ${result.adapter?.vendor ?? '?'} / ${result.adapter?.architecture ?? '?'}`;
  },
  (error: unknown) => {
    target.__smoke = { error: error instanceof Error ? `${error.name}: ${error.message}` : String(error) };
    if (status) status.textContent = target.__smoke.error ?? 'failed';
  },
);
