import { execFileSync } from 'node:child_process';
import { chromium, type Browser } from 'playwright-core';

/** Debian's chromium; Playwright never downloads a browser here. */
export const CHROMIUM = process.env.KVCOMPACT_CHROMIUM ?? '/usr/bin/chromium';

/** Builds the demo bundles so the page under test is the current source. */
export function buildBundles(): void {
  execFileSync(process.execPath, ['esbuild.config.mjs'], { stdio: 'inherit' });
}

/** Launches headless Chromium with WebGPU on (SwiftShader where there is no GPU). */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--enable-unsafe-webgpu', '--disable-quic', '--enable-features=Vulkan', '--use-angle=swiftshader'],
  });
}
