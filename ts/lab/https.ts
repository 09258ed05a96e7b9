/** Small HTTPS GETs with client certificates, for health and version probes. */
import { readFileSync } from 'node:fs';
import { request } from 'node:https';

export interface TlsFiles {
  ca: string;
  cert: string;
  key: string;
}

export interface HttpsResult {
  status: number;
  body: string;
}

export function httpsGet(url: string, tls: TlsFiles, timeoutMs = 3000): Promise<HttpsResult> {
  return new Promise((resolve, reject) => {
    let opts;
    try {
      opts = { ca: readFileSync(tls.ca), cert: readFileSync(tls.cert), key: readFileSync(tls.key), timeout: timeoutMs, agent: false as const };
    } catch (err) {
      reject(err);
      return;
    }
    const req = request(url, opts, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** GET and parse JSON; throws unless 2xx. */
export async function httpsJson<T>(url: string, tls: TlsFiles, timeoutMs = 3000): Promise<T> {
  const r = await httpsGet(url, tls, timeoutMs);
  if (r.status < 200 || r.status > 299) throw new Error(`${url}: HTTP ${r.status}: ${r.body.slice(0, 200)}`);
  return JSON.parse(r.body) as T;
}
