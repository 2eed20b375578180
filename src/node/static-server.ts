import { createReadStream, existsSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { extname, join, normalize, resolve } from 'node:path';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.map': 'application/json',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.bin': 'application/octet-stream',
};

/**
 * A running static server.
 *
 * @example
 * ```ts
 * const site: StaticServer = await serveStatic('dist/demo', { port: 0 });
 * const response = await fetch(`${site.url}index.html`);
 * await site.close();
 * ```
 */
export interface StaticServer {
  readonly url: string;
  readonly server: Server;
  close(): Promise<void>;
}

/**
 * Serves files from `root` (and extra `mounts`, e.g. model files) on 127.0.0.1. Paths never escape their root.
 *
 * @example
 * ```ts
 * const site = await serveStatic('dist/demo', { port: 0, mounts: { '/models/': '../shared/models' } });
 * console.log(site.url); // http://127.0.0.1:43123/
 * ```
 */
export async function serveStatic(
  root: string,
  options: { port?: number; mounts?: Record<string, string> } = {},
): Promise<StaticServer> {
  const roots: [string, string][] = [
    ...Object.entries(options.mounts ?? {}).map(([prefix, dir]): [string, string] => [prefix, resolve(dir)]),
    ['/', resolve(root)],
  ];
  const server = createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://127.0.0.1');
    let path = decodeURIComponent(url.pathname);
    if (path.endsWith('/')) path += 'index.html';
    const match = roots.find(([prefix]) => path.startsWith(prefix));
    const file = match ? normalize(join(match[1], path.slice(match[0].length))) : '';
    if (!match || !file.startsWith(match[1]) || !existsSync(file) || !statSync(file).isFile()) {
      response.writeHead(404, { 'content-type': 'text/plain' });
      response.end(`not found: ${path}`);
      return;
    }
    response.writeHead(200, {
      'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
      'cache-control': 'no-store',
    });
    createReadStream(file).pipe(response);
  });
  await new Promise<void>((done, fail) => {
    server.once('error', fail);
    server.listen(options.port ?? 0, '127.0.0.1', () => done());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}/`,
    server,
    close: () => new Promise<void>((done) => server.close(() => done())),
  };
}
