import test from 'ava';
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../ts/log/logger.js';
import { ApiError, startApiServer, type ApiServer } from '../../ts/api/server.js';
import { AgentApiError, AgentUnreachableError, callAgent } from '../../ts/api/client.js';

const log = createLogger({ component: 'test', level: 'silent' });

async function withServer(fn: (socketPath: string) => Promise<void>): Promise<void> {
  const socketPath = join(mkdtempSync(join(tmpdir(), 'membrane-api-')), 'agent.sock');
  const server: ApiServer = await startApiServer({
    socketPath,
    log,
    routes: [
      { method: 'GET', path: '/v1/healthz', handler: () => ({ ok: true }) },
      { method: 'GET', path: '/v1/items/:id', handler: ({ params }) => ({ id: params['id'] }) },
      {
        method: 'POST',
        path: '/v1/items',
        handler: ({ body }) => {
          if (typeof body !== 'object' || body === null || typeof (body as { name?: unknown }).name !== 'string') {
            throw new ApiError(400, 'invalid_item', 'an item needs a string "name"');
          }
          return { created: (body as { name: string }).name };
        },
      },
      {
        method: 'GET',
        path: '/v1/boom',
        handler: () => {
          throw new Error('kaboom');
        },
      },
    ],
  });
  try {
    await fn(socketPath);
  } finally {
    await server.close();
  }
}

/** Sends raw bytes, for the malformed cases the client would never produce. */
function raw(socketPath: string, method: string, path: string, body: string, contentType?: string): Promise<{ status: number; json: { error?: { code: string; message: string } } }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path, headers: contentType ? { 'content-type': contentType } : {} }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('the socket is mode 0600 and answers JSON', async (t) => {
  await withServer(async (socketPath) => {
    t.is(statSync(socketPath).mode & 0o777, 0o600);
    t.deepEqual(await callAgent({ socketPath, method: 'GET', path: '/v1/healthz' }), { ok: true });
    t.deepEqual(await callAgent({ socketPath, method: 'GET', path: '/v1/items/a%2Fb' }), { id: 'a/b' });
    t.deepEqual(await callAgent({ socketPath, method: 'POST', path: '/v1/items', body: { name: 'x' } }), { created: 'x' });
  });
});

test('malformed requests get a clear error and reach no handler', async (t) => {
  await withServer(async (socketPath) => {
    const notJson = await raw(socketPath, 'POST', '/v1/items', '{"name": ', 'application/json');
    t.is(notJson.status, 400);
    t.is(notJson.json.error?.code, 'invalid_json');
    const wrongType = await raw(socketPath, 'POST', '/v1/items', 'name=x', 'application/x-www-form-urlencoded');
    t.is(wrongType.status, 415);
    const tooBig = await raw(socketPath, 'POST', '/v1/items', JSON.stringify({ name: 'x'.repeat(1024 * 1024 + 10) }), 'application/json');
    t.is(tooBig.status, 413);
    const invalid = await callAgent({ socketPath, method: 'POST', path: '/v1/items', body: { name: 42 } }).catch((e: unknown) => e);
    t.true(invalid instanceof AgentApiError);
    t.is((invalid as AgentApiError).status, 400);
    t.regex((invalid as AgentApiError).message, /string "name"/);
  });
});

test('unknown routes are 404, wrong methods 405 naming the allowed ones, handler crashes 500', async (t) => {
  await withServer(async (socketPath) => {
    const missing = (await callAgent({ socketPath, method: 'GET', path: '/v1/nope' }).catch((e: unknown) => e)) as AgentApiError;
    t.is(missing.status, 404);
    const method = (await callAgent({ socketPath, method: 'DELETE', path: '/v1/healthz' }).catch((e: unknown) => e)) as AgentApiError;
    t.is(method.status, 405);
    t.regex(method.message, /allowed: GET/);
    const boom = (await callAgent({ socketPath, method: 'GET', path: '/v1/boom' }).catch((e: unknown) => e)) as AgentApiError;
    t.is(boom.status, 500);
    t.regex(boom.message, /kaboom/);
  });
});

test('a client without an agent is told what to do', async (t) => {
  const err = await callAgent({ socketPath: '/nonexistent/agent.sock', method: 'GET', path: '/v1/healthz' }).catch((e: unknown) => e);
  t.true(err instanceof AgentUnreachableError);
  t.regex((err as Error).message, /is it running on this node/);
});

test('a stale socket file is replaced; a live one is refused', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'membrane-api-'));
  const socketPath = join(dir, 'agent.sock');
  writeFileSync(socketPath, '');
  const first = await startApiServer({ socketPath, log, routes: [] });
  await t.throwsAsync(startApiServer({ socketPath, log, routes: [] }), { message: /another agent is serving/ });
  await first.close();
});
