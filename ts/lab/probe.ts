/**
 * `membrane lab probe`: connect from inside one lab pod to a pod, a service or an
 * address, the way the upstream NetworkPolicy e2e tests do, and report what
 * happened: connected (with the echo or the HTTP answer), refused, timed out.
 *
 *   parseProbeArgs   pure: the command line -> a validated ProbeArgs (ProbeUsageError)
 *   resolveProbe     the apiserver: pods -> netns and IP, services -> cluster IP
 *   runProbe         the connection, from a process inside the source pod's netns
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { isApiError } from './cluster.js';
import type { ProbeAttempt, ProbeOutcome, ProbeRequest } from './sim/probe-client.js';
import { netnsPath, netnsScriptCommand, simNetnsName } from './sim/scripts.js';

export class ProbeUsageError extends Error {
  override name = 'ProbeUsageError';
}

export class ProbeError extends Error {
  override name = 'ProbeError';
}

export type ProbeTarget = { kind: 'pod'; namespace: string; name: string } | { kind: 'service'; namespace: string; name: string } | { kind: 'ip'; ip: string };

export interface ProbeArgs {
  from: { namespace: string; name: string };
  to: ProbeTarget;
  port: number;
  protocol: 'tcp' | 'udp' | 'sctp';
  http?: { method: string; path: string; headers: Record<string, string> };
  timeoutMs: number;
}

export interface RawProbeArgs {
  from: string;
  to: string;
  port?: string;
  protocol?: string;
  http?: string[];
  header?: string[];
  timeout?: string;
}

export const DEFAULT_PROBE_TIMEOUT_MS = 3000;

/** A DNS-1123 label (namespaces, pod and service names are at most that strict). */
const NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

function objectRef(text: string, what: string): { namespace: string; name: string } {
  const parts = text.split('/');
  if (parts.length !== 2 || !parts[0] || !parts[1]) throw new ProbeUsageError(`${what} ${JSON.stringify(text)} is not namespace/name, e.g. default/web-0`);
  const [namespace, name] = parts as [string, string];
  if (!NAME.test(namespace)) throw new ProbeUsageError(`${what} ${JSON.stringify(text)}: ${JSON.stringify(namespace)} is not a namespace name (lower-case letters, digits, '-')`);
  if (!NAME.test(name)) throw new ProbeUsageError(`${what} ${JSON.stringify(text)}: ${JSON.stringify(name)} is not a pod or service name (lower-case letters, digits, '-', '.')`);
  return { namespace, name };
}

export function parseTarget(text: string): ProbeTarget {
  if (isIPv4(text)) return { kind: 'ip', ip: text };
  const svc = /^(?:svc|service)\/(.*)$/.exec(text);
  if (svc) return { kind: 'service', ...objectRef(svc[1]!, 'the service') };
  if (/^[0-9.:]+$/.test(text)) throw new ProbeUsageError(`the destination ${JSON.stringify(text)} is not an IPv4 address; give the port with --port, not host:port`);
  return { kind: 'pod', ...objectRef(text, 'the destination pod') };
}

export function parseProbeArgs(raw: RawProbeArgs): ProbeArgs {
  const from = objectRef(raw.from, 'the source pod');
  const to = parseTarget(raw.to);
  if (raw.port === undefined) throw new ProbeUsageError('--port is required: the destination port, 1-65535');
  if (!/^\d{1,5}$/.test(raw.port) || Number(raw.port) < 1 || Number(raw.port) > 65535) throw new ProbeUsageError(`--port ${raw.port} is not a port number (1-65535)`);
  const protocol = (raw.protocol ?? 'tcp').toLowerCase();
  if (protocol !== 'tcp' && protocol !== 'udp' && protocol !== 'sctp') throw new ProbeUsageError(`--protocol ${raw.protocol} is not one of tcp, udp, sctp`);
  let timeoutMs = DEFAULT_PROBE_TIMEOUT_MS;
  if (raw.timeout !== undefined) {
    if (!/^\d+$/.test(raw.timeout) || Number(raw.timeout) < 1 || Number(raw.timeout) > 600_000) throw new ProbeUsageError(`--timeout ${raw.timeout} is not a number of milliseconds (1-600000)`);
    timeoutMs = Number(raw.timeout);
  }
  const args: ProbeArgs = { from, to, port: Number(raw.port), protocol, timeoutMs };
  if (raw.header?.length && !raw.http) throw new ProbeUsageError('-H/--header needs --http METHOD PATH');
  if (raw.http) {
    if (protocol !== 'tcp') throw new ProbeUsageError(`--http needs --protocol tcp (got ${protocol})`);
    if (raw.http.length !== 2) throw new ProbeUsageError(`--http takes a method and a path, e.g. --http GET /healthz (got ${raw.http.length === 0 ? 'nothing' : raw.http.map((x) => JSON.stringify(x)).join(' ')})`);
    const [method, path] = raw.http as [string, string];
    if (!TOKEN.test(method)) throw new ProbeUsageError(`--http ${method} ${path}: ${JSON.stringify(method)} is not an HTTP method`);
    if (!path.startsWith('/') || /[\s\0]/.test(path)) throw new ProbeUsageError(`--http ${method} ${path}: the path must start with / and hold no spaces`);
    const headers: Record<string, string> = {};
    for (const h of raw.header ?? []) {
      const i = h.indexOf(':');
      const name = i > 0 ? h.slice(0, i).trim() : '';
      if (!TOKEN.test(name)) throw new ProbeUsageError(`-H ${JSON.stringify(h)} is not name:value, e.g. -H x-user:alice`);
      const value = h.slice(i + 1).trim();
      if (/[\r\n\0]/.test(value)) throw new ProbeUsageError(`-H ${JSON.stringify(h)}: the value holds a line break`);
      headers[name.toLowerCase()] = value;
    }
    args.http = { method: method.toUpperCase(), path, headers };
  }
  return args;
}

export interface ResolvedProbe {
  from: string;
  fromIP: string;
  netns: string;
  to: string;
  toIP: string;
}

function describeTarget(t: ProbeTarget): string {
  return t.kind === 'ip' ? t.ip : t.kind === 'service' ? `svc/${t.namespace}/${t.name}` : `${t.namespace}/${t.name}`;
}

async function readPod(core: CoreV1Api, ref: { namespace: string; name: string }, role: string) {
  try {
    return await core.readNamespacedPod(ref);
  } catch (err) {
    if (isApiError(err, 404)) throw new ProbeError(`the ${role} pod ${ref.namespace}/${ref.name} does not exist in the lab`);
    throw err;
  }
}

/** Finds the source pod's namespace and the destination address through the apiserver. */
export async function resolveProbe(kc: KubeConfig, args: ProbeArgs, netnsExists: (path: string) => boolean = existsSync): Promise<ResolvedProbe> {
  const core = kc.makeApiClient(CoreV1Api);
  const src = await readPod(core, args.from, 'source');
  const from = `${args.from.namespace}/${args.from.name}`;
  const uid = src.metadata?.uid ?? '';
  const netns = simNetnsName(uid);
  if (!src.status?.podIP || !netnsExists(netnsPath(netns))) {
    throw new ProbeError(
      `the source pod ${from} has no network on this machine yet (phase ${src.status?.phase ?? 'unknown'}, ${src.status?.podIP ? `IP ${src.status.podIP}` : 'no IP'}, ${netnsExists(netnsPath(netns)) ? 'netns present' : `no netns ${netns}`}); is the lab's node simulator running (membrane lab status)?`,
    );
  }
  let toIP: string;
  if (args.to.kind === 'ip') toIP = args.to.ip;
  else if (args.to.kind === 'pod') {
    const dst = await readPod(core, args.to, 'destination');
    if (!dst.status?.podIP) throw new ProbeError(`the destination pod ${describeTarget(args.to)} has no IP yet (phase ${dst.status?.phase ?? 'unknown'})`);
    toIP = dst.status.podIP;
  } else {
    let svc;
    try {
      svc = await core.readNamespacedService({ namespace: args.to.namespace, name: args.to.name });
    } catch (err) {
      if (isApiError(err, 404)) throw new ProbeError(`the service ${args.to.namespace}/${args.to.name} does not exist in the lab`);
      throw err;
    }
    const ip = svc.spec?.clusterIP;
    if (!ip || ip === 'None') throw new ProbeError(`the service ${args.to.namespace}/${args.to.name} is headless (no cluster IP); probe one of its pods instead`);
    toIP = ip;
  }
  return { from, fromIP: src.status.podIP, netns, to: describeTarget(args.to), toIP };
}

export interface ProbeResult extends Omit<ProbeAttempt, 'http'> {
  from: string;
  fromIP: string;
  to: string;
  toIP: string;
  port: number;
  protocol: 'tcp' | 'udp' | 'sctp';
  http?: ProbeAttempt['http'] & { method: string; path: string };
}

/** Runs the probe-client inside the source pod's netns and returns what it saw. */
export async function runProbeInNetns(resolved: ResolvedProbe, args: ProbeArgs): Promise<ProbeResult> {
  if (args.protocol === 'sctp') throw new ProbeError('SCTP probes are not supported: Node.js has no SCTP sockets, so the lab can neither send nor serve SCTP; probe with --protocol tcp or udp');
  const request: ProbeRequest = { ip: resolved.toIP, port: args.port, protocol: args.protocol, timeoutMs: args.timeoutMs, ...(args.http ? { http: args.http } : {}) };
  const { cmd, args: argv, cwd } = netnsScriptCommand(resolved.netns, 'probe-client', JSON.stringify(request));
  const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(cmd, argv, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const guard = setTimeout(() => child.kill('SIGKILL'), args.timeoutMs + 15_000);
    child.on('error', (err) => {
      clearTimeout(guard);
      reject(new ProbeError(`cannot run ${cmd}: ${err.message}`));
    });
    child.on('close', (code) => {
      clearTimeout(guard);
      resolve({ code, stdout, stderr });
    });
  });
  const line = out.stdout.trim().split('\n').pop() ?? '';
  let attempt: ProbeAttempt;
  try {
    attempt = JSON.parse(line) as ProbeAttempt;
  } catch {
    throw new ProbeError(`the probe inside ${resolved.netns} failed (exit ${out.code}): ${out.stderr.trim() || out.stdout.trim() || 'no output'}`);
  }
  const { http, ...rest } = attempt;
  const result: ProbeResult = { from: resolved.from, fromIP: resolved.fromIP, to: resolved.to, toIP: resolved.toIP, port: args.port, protocol: args.protocol, ...rest };
  if (http && args.http) result.http = { ...http, method: args.http.method, path: args.http.path };
  return result;
}

const OUTCOME_WORDS: Record<ProbeOutcome, string> = {
  connected: 'connected',
  refused: 'refused',
  'timed-out': 'timed out',
  unreachable: 'unreachable',
  reset: 'reset',
  error: 'failed',
};

export function humanProbe(r: ProbeResult): string {
  const head = `${OUTCOME_WORDS[r.outcome]}: ${r.from} (${r.fromIP}) -> ${r.to}${r.to === r.toIP ? '' : ` (${r.toIP})`} ${r.protocol.toUpperCase()}/${r.port} in ${r.ms} ms`;
  const lines = [head, `  ${r.detail}`];
  if (r.http) {
    lines.push(`  ${r.http.method} ${r.http.path} -> HTTP ${r.http.status}`);
    if (r.http.body) lines.push(...r.http.body.trimEnd().split('\n').map((l) => `  ${l}`));
  }
  return lines.join('\n');
}
