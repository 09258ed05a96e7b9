/**
 * Client of the agent API (unix socket, HTTP + JSON), for the CLI.
 */
import { request } from 'node:http';

export class AgentUnreachableError extends Error {
  override name = 'AgentUnreachableError';
}

/** An error answer of the agent: status, code and message as it sent them. */
export class AgentApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'AgentApiError';
  }
}

export interface ApiCall {
  socketPath: string;
  method: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH';
  path: string;
  body?: unknown;
  timeoutMs?: number;
}

export function callAgent<T>({ socketPath, method, path, body, timeoutMs = 30_000 }: ApiCall): Promise<T> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise<T>((resolve, reject) => {
    const req = request(
      {
        socketPath,
        method,
        path,
        headers: payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try {
            parsed = text === '' ? {} : JSON.parse(text);
          } catch {
            reject(new AgentApiError(res.statusCode ?? 0, 'invalid_response', `the agent answered ${method} ${path} with something that is not JSON: ${text.slice(0, 200)}`));
            return;
          }
          if ((res.statusCode ?? 500) >= 400) {
            const e = (parsed as { error?: { code?: string; message?: string; details?: unknown } }).error ?? {};
            reject(new AgentApiError(res.statusCode ?? 500, e.code ?? 'error', e.message ?? `HTTP ${res.statusCode}`, e.details));
            return;
          }
          resolve(parsed as T);
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
        reject(new AgentUnreachableError(`cannot reach the agent at ${socketPath} (${err.code}): is it running on this node? Start it with \`membrane agent\`, or point --config / MEMBRANE_API_SOCKET at its socket`));
      } else if (err.code === 'EACCES') {
        reject(new AgentUnreachableError(`no permission to use ${socketPath} (mode 0600, owned by the agent's user): run as root`));
      } else {
        reject(new AgentUnreachableError(`request ${method} ${path} to the agent at ${socketPath} failed: ${err.message}`));
      }
    });
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}
