// `npm run setup`: installs npm dependencies and, where no GPU driver is present and we are root on
// Debian/Ubuntu, the system packages of the SwiftShader software adapter (chromium ships it, libvulkan1 loads it).
// Elsewhere it prints exactly what to install.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';

const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';
const SYSTEM_PACKAGES = ['chromium', 'libvulkan1'];

function run(command, args, env = process.env) {
  console.log(`$ ${command} ${args.join(' ')}`);
  execFileSync(command, args, { stdio: 'inherit', env });
}

function hasLibVulkan() {
  const result = spawnSync('ldconfig', ['-p'], { encoding: 'utf8' });
  return result.status === 0 && result.stdout.includes('libvulkan.so.1');
}

function hasGpuDriver() {
  // A vendor ICD (NVIDIA, AMD, Intel) means a real GPU can serve WebGPU through Vulkan.
  const dirs = ['/usr/share/vulkan/icd.d', '/etc/vulkan/icd.d', '/usr/local/share/vulkan/icd.d'];
  return dirs.some((dir) => {
    const listing = spawnSync('ls', [dir], { encoding: 'utf8' });
    return listing.status === 0 && /nvidia|radeon|intel/i.test(listing.stdout);
  });
}

function isDebianLike() {
  if (!existsSync('/etc/os-release')) return false;
  return /^(ID|ID_LIKE)=.*(debian|ubuntu)/m.test(readFileSync('/etc/os-release', 'utf8'));
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

run('npm', ['ci', '--no-audit', '--no-fund']);

const haveSoftware = existsSync(SWIFTSHADER_ICD) && existsSync('/usr/bin/chromium') && hasLibVulkan();
if (haveSoftware) {
  console.log(`setup: SwiftShader software adapter present (${SWIFTSHADER_ICD}); Chromium for browser tests present`);
} else if (isRoot && isDebianLike()) {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  run('apt-get', ['update', '-qq'], env);
  run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...SYSTEM_PACKAGES], env);
  console.log('setup: installed the SwiftShader software adapter (chromium + libvulkan1)');
} else {
  const why = hasGpuDriver() ? 'a GPU driver is present, but' : 'no GPU driver was found and';
  console.log(
    `setup: ${why} the browser tests and the software fallback need: ${SYSTEM_PACKAGES.join(' ')}\n` +
      `  Debian/Ubuntu: sudo apt-get install -y ${SYSTEM_PACKAGES.join(' ')}\n` +
      '  Fedora: sudo dnf install -y chromium vulkan-loader\n' +
      'Then run `npm test`.',
  );
}
