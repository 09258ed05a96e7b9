/**
 * The two reads an informer needs from the apiserver, list (one page) and watch
 * (a stream of events), behind an interface so informers can be tested with a
 * fake. The real one speaks HTTPS with the TLS and credentials of a client-node
 * KubeConfig (`kc.applyToHTTPSOptions`), so anything kubeconfig supports (client
 * certificates, tokens, exec plugins, in-cluster service accounts) works here.
 *
 * Why not client-node's own ListWatch: it has no "initial list delivered"
 * signal, does not page lists, stops on the first error (no retry/backoff), and
 * its watch has no idle timeout, so a silently dead connection is never noticed.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { KubeConnection } from './connection.js';
import type { KubeObject } from './types.js';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

export interface WatchEvent {
  type: WatchEventType;
  /** The object, or for ERROR a metav1.Status. */
  object: KubeObject & { code?: number; reason?: string; message?: string };
}

export interface ListPage {
  items: KubeObject[];
  resourceVersion: string;
  /** Token for the next page; absent on the last one. */
  continue?: string;
}

export interface WatchOptions {
  /** The stream is given up (WatchIdleError) when nothing arrives for this long. */
  idleTimeoutMs: number;
  /** Called once the server has accepted the watch (2xx), before any event. */
  onOpen?: () => void;
}

export interface KubeTransport {
  /** GET a collection page. Rejects with KubeApiError on a non-2xx answer. */
  list(path: string, query: Record<string, string>, signal: AbortSignal): Promise<ListPage>;
  /**
   * GET ?watch=1 and call onEvent per event until the server ends the stream
   * (resolves), or the connection fails, an ERROR event arrives (rejects with
   * its KubeApiError, e.g. 410), onEvent throws, or signal aborts (rejects).
   */
  watch(path: string, query: Record<string, string>, signal: AbortSignal, onEvent: (event: WatchEvent) => void, options: WatchOptions): Promise<void>;
  /** Where requests go, for logs. */
  readonly server: string;
}

/** A non-2xx answer (or a watch ERROR event), with the apiserver's Status reason and message. */
export class KubeApiError extends Error {
  override name = 'KubeApiError';
  constructor(
    readonly code: number,
    readonly reason: string,
    detail: string,
    readonly path?: string,
  ) {
    super(`HTTP ${code}${reason ? ` ${reason}` : ''}${path ? ` on ${path}` : ''}: ${detail}`);
  }
}

export class WatchIdleError extends Error {
  override name = 'WatchIdleError';
}

/** 410 Gone / Expired: the resourceVersion (or continue token) is too old; the client must list again. */
export function isGone(err: unknown): boolean {
  return err instanceof KubeApiError && (err.code === 410 || err.reason === 'Expired' || err.reason === 'Gone');
}

/** The error a watch ERROR event stands for. */
export function watchErrorFromStatus(status: WatchEvent['object'], path: string): KubeApiError {
  return new KubeApiError(status.code ?? 500, status.reason ?? '', status.message ?? 'watch error event', path);
}

export interface HttpsTransportOptions {
  /** A watch line longer than this aborts the stream (the apiserver's own object limit is ~1.5 MiB). */
  maxLineBytes?: number;
  /** A list request taking longer than this fails. */
  listTimeoutMs?: number;
  /** Shared keep-alive connections (one is made for this transport otherwise). */
  connection?: KubeConnection;
}

const DEFAULT_MAX_LINE = 16 * 1024 * 1024;
const MAX_ERROR_BODY = 64 * 1024;

export class HttpsTransport implements KubeTransport {
  readonly server: string;
  private readonly base: URL;
  private readonly maxLineBytes: number;
  private readonly listTimeoutMs: number;
  private readonly connection: KubeConnection;

  constructor(
    private readonly kc: KubeConfig,
    options: HttpsTransportOptions = {},
  ) {
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error('the kubeconfig has no current cluster');
    this.server = cluster.server;
    this.base = new URL(cluster.server);
    this.maxLineBytes = options.maxLineBytes ?? DEFAULT_MAX_LINE;
    this.listTimeoutMs = options.listTimeoutMs ?? 60_000;
    this.connection = options.connection ?? new KubeConnection(kc);
  }

  async list(path: string, query: Record<string, string>, signal: AbortSignal): Promise<ListPage> {
    const timeout = AbortSignal.timeout(this.listTimeoutMs);
    const res = await this.get(path, query, AbortSignal.any([signal, timeout]));
    const body = await readAll(res, Infinity);
    let parsed: { items?: KubeObject[] | null; metadata?: { resourceVersion?: string; continue?: string } };
    try {
      parsed = JSON.parse(body) as typeof parsed;
    } catch {
      throw new Error(`list ${path}: the answer is not JSON: ${body.slice(0, 200)}`);
    }
    const page: ListPage = { items: parsed.items ?? [], resourceVersion: parsed.metadata?.resourceVersion ?? '' };
    if (parsed.metadata?.continue) page.continue = parsed.metadata.continue;
    return page;
  }

  async watch(path: string, query: Record<string, string>, signal: AbortSignal, onEvent: (event: WatchEvent) => void, options: WatchOptions): Promise<void> {
    const local = new AbortController();
    const combined = AbortSignal.any([signal, local.signal]);
    const res = await this.get(path, { ...query, watch: '1' }, combined);
    res.socket?.setKeepAlive(true, 30_000);
    options.onOpen?.();
    await new Promise<void>((resolve, reject) => {
      let pending = '';
      let settled = false;
      let idle: NodeJS.Timeout | undefined;
      const finish = (err?: unknown) => {
        if (settled) return;
        settled = true;
        if (idle) clearTimeout(idle);
        combined.removeEventListener('abort', onAbort);
        if (err !== undefined) {
          local.abort();
          res.destroy();
          reject(err instanceof Error ? err : new Error(String(err)));
        } else resolve();
      };
      const armIdle = () => {
        if (idle) clearTimeout(idle);
        idle = setTimeout(() => finish(new WatchIdleError(`watch ${path}: nothing received for ${options.idleTimeoutMs} ms`)), options.idleTimeoutMs);
      };
      const onAbort = () => finish(combined.reason ?? new Error('aborted'));
      combined.addEventListener('abort', onAbort, { once: true });
      armIdle();
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        if (settled) return;
        armIdle();
        pending += chunk;
        let nl: number;
        while ((nl = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, nl).trim();
          pending = pending.slice(nl + 1);
          if (line === '') continue;
          let event: WatchEvent;
          try {
            event = JSON.parse(line) as WatchEvent;
          } catch {
            finish(new Error(`watch ${path}: a line is not JSON: ${line.slice(0, 200)}`));
            return;
          }
          if (event.type === 'ERROR') {
            // The apiserver ends the stream after an ERROR event (410 Expired is the usual one).
            finish(watchErrorFromStatus(event.object, path));
            return;
          }
          try {
            onEvent(event);
          } catch (err) {
            finish(err);
            return;
          }
          if (settled) return;
        }
        if (pending.length > this.maxLineBytes) finish(new Error(`watch ${path}: an event is larger than ${this.maxLineBytes} bytes`));
      });
      res.on('end', () => finish());
      res.on('error', (err) => finish(new Error(`watch ${path}: the connection failed: ${err.message}`)));
      res.on('close', () => finish(res.complete ? undefined : new Error(`watch ${path}: the connection closed mid-stream`)));
    });
  }

  /** Closes the kept-alive connections (of the shared KubeConnection, if one was passed). */
  close(): void {
    this.connection.close();
  }

  /** GET with the kubeconfig's TLS and credentials; resolves on a 2xx head, rejects with KubeApiError otherwise. */
  private async get(path: string, query: Record<string, string>, signal: AbortSignal): Promise<IncomingMessage> {
    const url = new URL(this.base.href);
    url.pathname = this.base.pathname.replace(/\/+$/, '') + path;
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
    const opts: RequestOptions = {};
    await this.kc.applyToHTTPSOptions(opts);
    const shared = await this.connection.httpsAgent();
    if (shared) opts.agent = shared;
    signal.throwIfAborted();
    const headers = { ...(opts.headers as Record<string, string> | undefined), Accept: 'application/json' };
    const send = url.protocol === 'http:' ? httpRequest : httpsRequest;
    const requestOptions: RequestOptions = { ...opts, method: 'GET', headers, signal };
    if (url.protocol === 'http:') delete requestOptions.agent;
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = send(url, requestOptions, resolve);
      req.on('error', reject);
      req.end();
    });
    const code = res.statusCode ?? 0;
    if (code >= 200 && code < 300) return res;
    const text = await readAll(res, MAX_ERROR_BODY).catch(() => '');
    let status: { reason?: string; message?: string } = {};
    try {
      status = JSON.parse(text) as typeof status;
    } catch {
      status = { message: text.slice(0, 500) || res.statusMessage || '' };
    }
    throw new KubeApiError(code, status.reason ?? '', status.message ?? '', path);
  }
}

function readAll(res: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        res.destroy();
        resolve(Buffer.concat(chunks).toString('utf8'));
        return;
      }
      chunks.push(c);
    });
    res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    res.on('error', reject);
  });
}
