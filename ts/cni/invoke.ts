/**
 * Calling the CNI plugin the way a container runtime does: the CNI_* environment,
 * the plugin's network configuration on stdin (built from a conflist the way
 * libcni builds it), the result or the spec error on stdout. For the lab's node
 * simulator, the benchmarks and the tests.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'GC' | 'VERSION';

export interface CniInterface {
  name: string;
  mac?: string;
  mtu?: number;
  sandbox?: string;
}

export interface CniIp {
  address: string;
  gateway?: string;
  interface?: number;
}

export interface CniRoute {
  dst: string;
  gw?: string;
  scope?: number;
}

/** The ADD result (CNI 1.x shape). */
export interface CniResult {
  cniVersion: string;
  interfaces: CniInterface[];
  ips: CniIp[];
  routes?: CniRoute[];
  dns?: Record<string, unknown>;
}

/** The spec's error object. */
export interface CniErrorBody {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

export interface CniInvocation {
  command: CniCommand;
  containerId?: string;
  netns?: string;
  ifname?: string;
  /** CNI_ARGS pairs, e.g. { K8S_POD_NAMESPACE: 'default', K8S_POD_NAME: 'web-0' }. */
  args?: Record<string, string>;
  /** The plugin's network configuration (see pluginConfig), or raw bytes to send as they are. */
  config: Record<string, unknown> | string;
  /** CNI_PATH (default: the plugin binary's directory). */
  cniPath?: string;
  timeoutMs?: number;
}

export type CniOutcome =
  | { ok: true; exitCode: 0; output: unknown; stderr: string }
  | { ok: false; exitCode: number | null; error: CniErrorBody; stderr: string };

export class CniInvokeError extends Error {
  override name = 'CniInvokeError';
}

/** Where the plugin binary is: MEMBRANE_CNI_BIN, else $CARGO_TARGET_DIR, else the shared build cache. */
export function cniPluginPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env['MEMBRANE_CNI_BIN']) return env['MEMBRANE_CNI_BIN'];
  const cache = env['MEMBRANE_CACHE_DIR'] ?? join(env['XDG_CACHE_HOME'] ?? join(homedir(), '.cache'), 'membrane');
  const target = env['CARGO_TARGET_DIR'] ?? join(cache, 'cargo-target');
  return join(target, 'release', 'membrane-cni');
}

/** Throws a clear error when the plugin is not built. */
export function requirePlugin(path: string): string {
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw new CniInvokeError(`the CNI plugin is not built at ${path}: run \`npm run build:cni\` (or set MEMBRANE_CNI_BIN / CARGO_TARGET_DIR to where membrane-cni was built)`);
  }
  return path;
}

export interface Conflist {
  cniVersion: string;
  name: string;
  plugins: Array<Record<string, unknown>>;
}

/** Parses a conflist and checks the fields a runtime needs. */
export function parseConflist(text: string, source = 'conflist'): Conflist {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new CniInvokeError(`${source} is not valid JSON: ${(err as Error).message}`);
  }
  const c = raw as Partial<Conflist> | null;
  if (!c || typeof c !== 'object' || Array.isArray(c)) throw new CniInvokeError(`${source} must be a JSON object`);
  if (typeof c.cniVersion !== 'string' || c.cniVersion === '') throw new CniInvokeError(`${source} has no cniVersion`);
  if (typeof c.name !== 'string' || c.name === '') throw new CniInvokeError(`${source} has no name`);
  if (!Array.isArray(c.plugins) || c.plugins.length === 0 || !c.plugins.every((p) => p && typeof p === 'object' && typeof (p as { type?: unknown }).type === 'string')) {
    throw new CniInvokeError(`${source} needs a non-empty plugins list whose entries have a type`);
  }
  return c as Conflist;
}

export function readConflist(path: string): Conflist {
  return parseConflist(readFileSync(path, 'utf8'), path);
}

/** The configuration one plugin of a list gets on stdin: its entry plus the list's name and cniVersion (and prevResult when given). */
export function pluginConfig(list: Conflist, index = 0, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const plugin = list.plugins[index];
  if (!plugin) throw new CniInvokeError(`conflist ${list.name} has no plugin ${index}`);
  return { ...plugin, name: list.name, cniVersion: list.cniVersion, ...extra };
}

export function formatCniArgs(args: Record<string, string>): string {
  return Object.entries(args)
    .map(([k, v]) => `${k}=${v}`)
    .join(';');
}

/** Reads the plugin's stdout: a JSON document on success; the spec error object otherwise. */
export function parsePluginOutput(exitCode: number | null, stdout: string, stderr: string): CniOutcome {
  const text = stdout.trim();
  let parsed: unknown;
  if (text !== '') {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
  }
  if (exitCode === 0) {
    if (text !== '' && parsed === undefined) throw new CniInvokeError(`the plugin succeeded but its output is not JSON: ${text.slice(0, 200)}`);
    return { ok: true, exitCode: 0, output: parsed, stderr };
  }
  const e = parsed as Partial<CniErrorBody> | undefined;
  if (!e || typeof e.code !== 'number' || typeof e.msg !== 'string') {
    const how = exitCode === null ? 'was killed' : `exited ${exitCode}`;
    throw new CniInvokeError(`the plugin ${how} without a CNI error object on stdout (stdout: ${text.slice(0, 200) || 'empty'}; stderr: ${stderr.trim().slice(0, 300) || 'empty'})`);
  }
  return { ok: false, exitCode, error: { cniVersion: String(e.cniVersion ?? ''), code: e.code, msg: e.msg, ...(e.details ? { details: e.details } : {}) }, stderr };
}

/** Runs the plugin once. Rejects only when it cannot be run or answers outside the spec. */
export function invokeCni(plugin: string, inv: CniInvocation): Promise<CniOutcome> {
  const env: NodeJS.ProcessEnv = { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin', CNI_COMMAND: inv.command, CNI_PATH: inv.cniPath ?? join(plugin, '..') };
  if (inv.containerId !== undefined) env['CNI_CONTAINERID'] = inv.containerId;
  if (inv.netns !== undefined) env['CNI_NETNS'] = inv.netns;
  if (inv.ifname !== undefined) env['CNI_IFNAME'] = inv.ifname;
  if (inv.args) env['CNI_ARGS'] = formatCniArgs(inv.args);
  const stdin = typeof inv.config === 'string' ? inv.config : JSON.stringify(inv.config);
  return new Promise((resolve, reject) => {
    const child = spawn(plugin, [], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), inv.timeoutMs ?? 60_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new CniInvokeError(`cannot run the CNI plugin ${plugin}: ${err.message}`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      try {
        resolve(parsePluginOutput(code, stdout, stderr));
      } catch (err) {
        reject(err);
      }
    });
    child.stdin.on('error', () => undefined); // the plugin may exit before reading (VERSION)
    child.stdin.end(stdin);
  });
}
