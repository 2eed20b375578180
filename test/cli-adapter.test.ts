// Which adapter a command picks and what it says about it, run as a user runs it: without the VK_ICD_FILENAMES
// that vitest.config.ts sets for the other tests.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { hardwareIcdManifests, parseAdapterChoice, vulkanIcdDirectories } from '../src/node/gpu.js';
import { InvalidArgumentError } from '../src/errors.js';
import { runCli, STACK_LINE } from './cli-helpers.js';

const AS_A_USER = { VK_ICD_FILENAMES: undefined, VK_DRIVER_FILES: undefined, KVCOMPACT_ADAPTER: undefined };
const noGpuDriver = process.platform === 'linux' && hardwareIcdManifests().length === 0;

function adapterLines(stderr: string): string[] {
  return stderr.split('\n').filter((line) => line.startsWith('kvcompact: adapter '));
}

describe('hardwareIcdManifests', () => {
  it('counts vendor driver manifests and ignores SwiftShader and lavapipe', () => {
    const root = mkdtempSync(join(tmpdir(), 'kvcompact-icd-'));
    const icd = (name: string, library: string) =>
      writeFileSync(join(root, name), JSON.stringify({ file_format_version: '1.0.0', ICD: { library_path: library } }));
    icd('lvp_icd.x86_64.json', '/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so');
    icd('custom.json', './libvk_swiftshader.so');
    writeFileSync(join(root, 'README'), 'not a manifest');
    expect(hardwareIcdManifests([root, join(root, 'missing')], {})).toEqual([]);
    icd('nvidia_icd.json', 'libGLX_nvidia.so.0');
    expect(hardwareIcdManifests([root], {})).toEqual([join(root, 'nvidia_icd.json')]);
  });

  it("follows the Vulkan loader's XDG search directories", () => {
    const dirs = vulkanIcdDirectories({ XDG_CONFIG_HOME: '/c', XDG_CONFIG_DIRS: '/x1:/x2', XDG_DATA_HOME: '/d', XDG_DATA_DIRS: '/s1' });
    expect(dirs).toEqual(['/c', '/x1', '/x2', '/usr/local/etc', '/etc', '/d', '/s1'].map((d) => `${d}/vulkan/icd.d`));
  });

  it('parseAdapterChoice names where a wrong value came from', () => {
    expect(parseAdapterChoice(undefined, 'KVCOMPACT_ADAPTER')).toBe('auto');
    expect(() => parseAdapterChoice('gpu', 'KVCOMPACT_ADAPTER')).toThrow(InvalidArgumentError);
    expect(() => parseAdapterChoice('gpu', 'KVCOMPACT_ADAPTER')).toThrow('KVCOMPACT_ADAPTER: must be auto, hardware or software; got "gpu"');
  });
});

describe('kvcompact info --json on this machine', () => {
  it('keeps stdout pure JSON and says once on stderr which adapter it chose and why', () => {
    const { status, stdout, stderr } = runCli(['info', '--json'], AS_A_USER);
    expect(status).toBe(0);
    const report = JSON.parse(stdout) as { adapter: { vendor: string; architecture: string } };
    expect(stdout + stderr).not.toContain('vkCreateInstance');
    const lines = adapterLines(stderr);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`${report.adapter.vendor} / ${report.adapter.architecture}`);
    if (noGpuDriver) {
      // No GPU driver here (CI, the development machines): SwiftShader, chosen before Dawn probes Vulkan.
      expect(lines[0]).toMatch(/\(software\): SwiftShader \(.*vk_swiftshader_icd\.json\), as no Vulkan GPU driver is installed/);
    } else {
      expect(lines[0]).toMatch(/a hardware GPU|offered no hardware adapter/);
    }
  });

  it('names the adapter asked for with --adapter software', () => {
    const { status, stderr } = runCli(['info', '--adapter', 'software'], AS_A_USER);
    expect(status).toBe(0);
    expect(adapterLines(stderr)).toEqual([expect.stringMatching(/\(software\): SwiftShader .*as software was asked for/)]);
  });

  it.runIf(noGpuDriver)('--adapter hardware without a GPU driver fails in one line, status 1, without a Vulkan warning', () => {
    const { status, stdout, stderr } = runCli(['info', '--adapter', 'hardware'], AS_A_USER);
    expect(status).toBe(1);
    expect(stdout).toBe('');
    expect(stderr).toMatch(/^kvcompact info: no hardware GPU adapter: no Vulkan GPU driver is installed/);
    expect(stderr).not.toContain('vkCreateInstance');
    expect(stderr).not.toMatch(STACK_LINE);
  });
});

describe('kvcompact generate --json', () => {
  it('prints only the JSON on stdout; model files and adapter go to stderr', () => {
    const { status, stdout, stderr } = runCli(['generate', '--prompt', 'Lily', '--steps', '2', '--json'], AS_A_USER);
    expect(status).toBe(0);
    const result = JSON.parse(stdout) as { tokens: number[]; report: { generatedTokens: number } };
    expect(result.report.generatedTokens).toBe(2);
    expect(stderr).toMatch(/^model: using /m);
    expect(adapterLines(stderr)).toHaveLength(1);
    expect(stdout + stderr).not.toContain('vkCreateInstance');
  });
});
