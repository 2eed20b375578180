// Real redis-server processes for the Redis tier's tests: free loopback ports (found with node:net, since
// redis-server refuses port 0), no persistence, a temp dir each, stopped by the test's afterAll. Never a system
// service, never a fixed port. A missing redis-server is a failure that says to run `npm run setup`.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function requireRedis(): void {
  for (const command of ['redis-server', 'redis-cli']) {
    if (spawnSync('sh', ['-c', `command -v ${command}`]).status !== 0) {
      throw new Error(`${command} is not installed: the Redis tier tests start real servers. Run \`npm run setup\` (as root on Debian/Ubuntu) or install redis-server and redis-tools.`);
    }
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = new Socket();
      socket.once('connect', () => (socket.destroy(), resolve(true)));
      socket.once('error', () => (socket.destroy(), resolve(false)));
      socket.connect(port, '127.0.0.1');
    });
    if (open) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`redis-server did not listen on 127.0.0.1:${port} within ${timeoutMs} ms`);
}

export interface RedisServerOptions {
  readonly port?: number;
  readonly password?: string;
  /** Extra `--name value` arguments. */
  readonly args?: readonly string[];
}

/** One redis-server; `stop` kills it (SIGKILL: the "killed mid-run" fault), `start` brings it back on its port. */
export class RedisServer {
  readonly dir = mkdtempSync(join(tmpdir(), 'kvc-redis-'));
  #process: ChildProcess | null = null;
  private constructor(
    readonly port: number,
    readonly options: RedisServerOptions,
  ) {}

  static async start(options: RedisServerOptions = {}): Promise<RedisServer> {
    requireRedis();
    const server = new RedisServer(options.port ?? (await freePort()), options);
    await server.start();
    return server;
  }

  get url(): string {
    return this.options.password === undefined ? `redis://127.0.0.1:${this.port}` : `redis://default:${encodeURIComponent(this.options.password)}@127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir, '--daemonize', 'no', '--loglevel', 'warning'];
    if (this.options.password !== undefined) args.push('--requirepass', this.options.password);
    args.push(...(this.options.args ?? []));
    const child = spawn('redis-server', args, { stdio: 'ignore' });
    child.on('error', () => {});
    this.#process = child;
    await waitForPort(this.port, 5000);
  }

  async kill(): Promise<void> {
    const child = this.#process;
    this.#process = null;
    if (child === null || child.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    });
  }

  /** redis-cli against this server (AUTH from the options). */
  cli(...args: string[]): string {
    const auth = this.options.password === undefined ? [] : ['-a', this.options.password, '--no-auth-warning'];
    const result = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(this.port), ...auth, ...args], { encoding: 'utf8' });
    if (result.status !== 0) throw new Error(`redis-cli ${args.join(' ')}: ${result.stderr}`);
    return result.stdout.trim();
  }

  async destroy(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A cluster of `masters` masters, no replicas, that keeps serving the slots of live masters when one dies. */
export class RedisCluster {
  private constructor(readonly nodes: RedisServer[]) {}

  static async start(masters = 3): Promise<RedisCluster> {
    requireRedis();
    const nodes: RedisServer[] = [];
    for (let i = 0; i < masters; i++) {
      const port = await freePort();
      // cluster-require-full-coverage no: the slots of a dead master fail, the others keep answering.
      nodes.push(await RedisServer.start({ port, args: ['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', '1000', '--cluster-require-full-coverage', 'no'] }));
    }
    const create = spawnSync('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8' });
    if (create.status !== 0) throw new Error(`redis-cli --cluster create failed: ${create.stdout}${create.stderr}`);
    const cluster = new RedisCluster(nodes);
    const deadline = Date.now() + 10_000;
    while (!nodes.every((n) => n.cli('CLUSTER', 'INFO').includes('cluster_state:ok'))) {
      if (Date.now() > deadline) throw new Error('the cluster did not reach cluster_state:ok within 10 s');
      await new Promise((r) => setTimeout(r, 50));
    }
    return cluster;
  }

  get urls(): string[] {
    return this.nodes.map((n) => n.url);
  }

  /** The node serving `slot`. */
  owner(slot: number): RedisServer {
    const owner = this.nodes.find((n) => slotRanges(n).some(([a, b]) => slot >= a && slot <= b));
    if (owner === undefined) throw new Error(`no node owns slot ${slot}`);
    return owner;
  }

  async destroy(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.destroy()));
  }
}

/** The slot ranges `node` serves itself (CLUSTER NODES, the "myself" line). */
function slotRanges(node: RedisServer): Array<[number, number]> {
  const myself = node.cli('CLUSTER', 'NODES').split('\n').find((line) => line.includes('myself'));
  if (myself === undefined) return [];
  return myself
    .split(' ')
    .slice(8)
    .filter((part) => /^\d+(-\d+)?$/.test(part))
    .map((part) => {
      const [a, b] = part.split('-').map(Number) as [number, number | undefined];
      return [a, b ?? a];
    });
}
