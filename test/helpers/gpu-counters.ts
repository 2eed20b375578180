import type { GpuContext } from '../../src/gpu/context.js';

/** What a piece of GPU work cost the host: CPU waits, submits, dispatches, buffer copies, buffers created. */
export interface GpuCounts {
  /** Awaited completions: buffer maps plus gpu.idle() calls. */
  waits: number;
  submits: number;
  dispatches: number;
  copies: number;
  buffersCreated: number;
  /** Of those, STORAGE or MAP_READ buffers (scratch and staging, not the per-dispatch uniforms). */
  scratchCreated: number;
}

/**
 * Counts what `body` asks of the device by wrapping the device's entry points on the instance (its encoders,
 * passes and buffers too), then restores them. For tests that pin how many waits and copies a call makes.
 */
export async function countGpuWork<T>(gpu: GpuContext, body: () => Promise<T>): Promise<{ result: T; counts: GpuCounts }> {
  const counts: GpuCounts = { waits: 0, submits: 0, dispatches: 0, copies: 0, buffersCreated: 0, scratchCreated: 0 };
  const device = gpu.device;
  const queue = device.queue;
  const createEncoder = device.createCommandEncoder.bind(device);
  const createBuffer = device.createBuffer.bind(device);
  const submit = queue.submit.bind(queue);
  const idle = gpu.idle.bind(gpu);
  device.createCommandEncoder = (descriptor?: GPUCommandEncoderDescriptor) => {
    const encoder = createEncoder(descriptor);
    const copy = encoder.copyBufferToBuffer.bind(encoder) as (...args: unknown[]) => void;
    (encoder as unknown as { copyBufferToBuffer: (...args: unknown[]) => void }).copyBufferToBuffer = (...args: unknown[]) => {
      counts.copies++;
      copy(...args);
    };
    const begin = encoder.beginComputePass.bind(encoder);
    encoder.beginComputePass = (passDescriptor?: GPUComputePassDescriptor) => {
      const pass = begin(passDescriptor);
      const dispatch = pass.dispatchWorkgroups.bind(pass);
      pass.dispatchWorkgroups = (x: number, y?: number, z?: number) => {
        counts.dispatches++;
        dispatch(x, y, z);
      };
      return pass;
    };
    return encoder;
  };
  device.createBuffer = (descriptor: GPUBufferDescriptor) => {
    counts.buffersCreated++;
    if ((descriptor.usage & (GPUBufferUsage.STORAGE | GPUBufferUsage.MAP_READ)) !== 0) counts.scratchCreated++;
    return createBuffer(descriptor);
  };
  // Maps of every buffer, including scratch created before the count: patched on the prototype.
  const probe = createBuffer({ size: 4, usage: GPUBufferUsage.MAP_READ });
  const bufferPrototype = Object.getPrototypeOf(probe) as GPUBuffer;
  probe.destroy();
  const map = bufferPrototype.mapAsync;
  bufferPrototype.mapAsync = function (this: GPUBuffer, mode: GPUMapModeFlags, offset?: number, size?: number) {
    counts.waits++;
    return map.call(this, mode, offset, size);
  };
  queue.submit = (buffers: Iterable<GPUCommandBuffer>) => {
    counts.submits++;
    submit(buffers);
  };
  gpu.idle = async () => {
    counts.waits++;
    await idle();
  };
  try {
    return { result: await body(), counts };
  } finally {
    bufferPrototype.mapAsync = map;
    // The wrappers are own properties shadowing the prototypes' methods: deleting them restores those.
    delete (device as unknown as Record<string, unknown>)['createCommandEncoder'];
    delete (device as unknown as Record<string, unknown>)['createBuffer'];
    delete (queue as unknown as Record<string, unknown>)['submit'];
    delete (gpu as unknown as Record<string, unknown>)['idle'];
  }
}
