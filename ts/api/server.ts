/**
 * The agent API: HTTP + JSON on a unix socket (mode 0600) under the state dir.
 * The CNI plugin and the CLI are its clients.
 *
 * Routes are a table of (method, path pattern, handler). A handler gets the
 * parsed JSON body and path parameters and returns a value (200, JSON) or
 * throws an ApiError with a status. Bad input never reaches a handler unparsed:
 * a body that is not JSON, too large, or sent with the wrong content type gets a
 * 400/413/415 that says what is wrong.
 */
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from '../log/logger.js';

export const MAX_BODY_BYTES = 1024 * 1024;

/** An error with an HTTP status and a stable code, sent as {"error": {...}}. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export interface RouteRequest {
  params: Record<string, string>;
  query: URLSearchParams;
  body: unknown;
}

export interface Route {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH';
  /** e.g. "/v1/endpoints/:id" */
  path: string;
  handler: (req: RouteRequest) => unknown;
}

interface CompiledRoute extends Route {
  pattern: RegExp;
  names: string[];
}

function compile(route: Route): CompiledRoute {
  const names: string[] = [];
  const source = route.path
    .split('/')
    .map((part) => {
      if (part.startsWith(':')) {
        names.push(part.slice(1));
        return '([^/]+)';
      }
      return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    })
    .join('/');
  return { ...route, pattern: new RegExp(`^${source}/?$`), names };
}

/** Pure routing: which route answers, with which params, or which error. */
export function matchRoute(routes: readonly CompiledRoute[], method: string, path: string): { route: CompiledRoute; params: Record<string, string> } | ApiError {
  const byPath = routes.filter((r) => r.pattern.test(path));
  if (byPath.length === 0) return new ApiError(404, 'not_found', `no API route ${path}`);
  const route = byPath.find((r) => r.method === method);
  if (!route) return new ApiError(405, 'method_not_allowed', `${method} is not allowed on ${path}; allowed: ${byPath.map((r) => r.method).join(', ')}`);
  const m = route.pattern.exec(path)!;
  const params: Record<string, string> = {};
  route.names.forEach((name, i) => (params[name] = decodeURIComponent(m[i + 1] ?? '')));
  return { route, params };
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new ApiError(413, 'body_too_large', `request body over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return undefined;
  const type = req.headers['content-type'] ?? '';
  if (!type.startsWith('application/json')) throw new ApiError(415, 'unsupported_media_type', `send the body as application/json (got ${type || 'no content type'})`);
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (err) {
    throw new ApiError(400, 'invalid_json', `request body is not valid JSON: ${(err as Error).message}`);
  }
}

function send(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

export interface ApiServerOptions {
  socketPath: string;
  routes: Route[];
  log: Logger;
}

export interface ApiServer {
  server: Server;
  close(): Promise<void>;
}

/** True when something accepts connections on the socket. */
function socketInUse(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

export async function startApiServer({ socketPath, routes, log }: ApiServerOptions): Promise<ApiServer> {
  const compiled = routes.map(compile);
  mkdirSync(dirname(socketPath), { recursive: true, mode: 0o700 });
  if (existsSync(socketPath)) {
    if (await socketInUse(socketPath)) {
      throw new Error(`another agent is serving ${socketPath}; stop it first (only one agent per node)`);
    }
    unlinkSync(socketPath); // stale socket of a dead agent
  }
  const server = createServer((req, res) => {
    const started = process.hrtime.bigint();
    const url = new URL(req.url ?? '/', 'http://agent');
    const finish = (status: number, value: unknown) => {
      send(res, status, value);
      log.debug({ method: req.method, path: url.pathname, status, ms: Number(process.hrtime.bigint() - started) / 1e6 }, 'api request');
    };
    void (async () => {
      try {
        const matched = matchRoute(compiled, req.method ?? 'GET', url.pathname);
        if (matched instanceof ApiError) throw matched;
        const body = await readBody(req);
        const value = await matched.route.handler({ params: matched.params, query: url.searchParams, body });
        finish(200, value ?? {});
      } catch (err) {
        if (err instanceof ApiError) {
          finish(err.status, { error: { code: err.code, message: err.message, ...(err.details === undefined ? {} : { details: err.details }) } });
        } else {
          log.error({ err, method: req.method, path: url.pathname }, 'api handler failed');
          finish(500, { error: { code: 'internal', message: (err as Error).message } });
        }
      }
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  chmodSync(socketPath, 0o600);
  log.info({ socket: socketPath, routes: routes.length }, 'agent API listening');
  return {
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
