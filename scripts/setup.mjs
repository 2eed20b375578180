// `npm run setup`: installs npm dependencies and, where we are root on Debian/Ubuntu, the system packages the tests
// need: the SwiftShader software adapter (chromium ships it, libvulkan1 loads it) and the Redis server and client
// (redis-server, redis-tools: the Redis tier's tests start their own servers and build a cluster with redis-cli).
// Elsewhere it prints exactly what to install.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';

const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';
const SYSTEM_PACKAGES = ['chromium', 'libvulkan1'];
// openssl: the TLS test of the Redis tier makes its own certificate.
const REDIS_PACKAGES = ['redis-server', 'redis-tools', 'openssl'];

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

function onPath(command) {
  return spawnSync('sh', ['-c', `command -v ${command}`], { encoding: 'utf8' }).status === 0;
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

run('npm', ['ci', '--no-audit', '--no-fund']);

const haveSoftware = existsSync(SWIFTSHADER_ICD) && existsSync('/usr/bin/chromium') && hasLibVulkan();
const haveRedis = onPath('redis-server') && onPath('redis-cli') && onPath('openssl');
const missing = [...(haveSoftware ? [] : SYSTEM_PACKAGES), ...(haveRedis ? [] : REDIS_PACKAGES)];
if (haveSoftware) console.log(`setup: SwiftShader software adapter present (${SWIFTSHADER_ICD}); Chromium for browser tests present`);
if (haveRedis) console.log('setup: redis-server, redis-cli and openssl present (the Redis tier tests start their own servers)');
if (missing.length === 0) {
  // nothing to install
} else if (isRoot && isDebianLike()) {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  run('apt-get', ['update', '-qq'], env);
  run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], env);
  if (!haveSoftware) console.log('setup: installed the SwiftShader software adapter (chromium + libvulkan1)');
  if (!haveRedis) {
    // The package starts a system service on port 6379; the tests never use it (they start their own servers).
    spawnSync('sh', ['-c', 'command -v systemctl >/dev/null && systemctl disable --now redis-server 2>/dev/null'], { stdio: 'ignore' });
    console.log('setup: installed redis-server and redis-tools');
  }
} else {
  if (!haveSoftware) {
    const why = hasGpuDriver() ? 'a GPU driver is present, but' : 'no GPU driver was found and';
    console.log(
      `setup: ${why} the browser tests and the software fallback need: ${SYSTEM_PACKAGES.join(' ')}\n` +
        `  Debian/Ubuntu: sudo apt-get install -y ${SYSTEM_PACKAGES.join(' ')}\n` +
        '  Fedora: sudo dnf install -y chromium vulkan-loader',
    );
  }
  if (!haveRedis) {
    console.log(
      `setup: the Redis tier tests need redis-server, redis-cli and openssl: ${REDIS_PACKAGES.join(' ')}\n` +
        `  Debian/Ubuntu: sudo apt-get install -y ${REDIS_PACKAGES.join(' ')}\n` +
        '  Fedora: sudo dnf install -y redis openssl   macOS: brew install redis openssl',
    );
  }
  console.log('Then run `npm test`.');
}
