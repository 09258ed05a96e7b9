/**
 * Helpers for the CNI e2e tests: the plugin binary and cnitool, a NETCONFPATH
 * with our conflist, pod network namespaces ("mbr-cni-" + pid), the host links
 * the plugin owns (found by their alias), and a real `membrane agent` process.
 */
import { execFileSync, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { agentSocketOf, startAgentProcess, stopAgentProcess } from '../../../ts/agent/process.js';
import { cniPluginPath, readConflist, requirePlugin, type Conflist } from '../../../ts/cni/invoke.js';
import { REPO } from './lab.js';

/** The plugin under test, with a clear error when it is not built. */
export function pluginBinary(): string {
  return requirePlugin(cniPluginPath());
}

/** cnitool, built once from the Go module proxy by ts/setup/build-cnitool.sh. */
export function cnitoolBinary(): string {
  const r = spawnSync('bash', [join(REPO, 'ts', 'setup', 'build-cnitool.sh')], { encoding: 'utf8', timeout: 10 * 60_000 });
  if (r.status !== 0) throw new Error(`ts/setup/build-cnitool.sh failed (exit ${r.status}): ${r.stderr}`);
  return r.stdout.trim();
}

/** deploy/cni/10-membrane.conflist with a network name and agent socket of the test's own. */
export function testConflist(network: string, agentSocket: string, extra: Record<string, unknown> = {}): Conflist {
  const list = readConflist(join(REPO, 'deploy', 'cni', '10-membrane.conflist'));
  return { ...list, name: network, plugins: [{ ...list.plugins[0], agentSocket, ...extra }] };
}

/** A NETCONFPATH directory holding the conflist. */
export function writeNetconfDir(list: Conflist): string {
  const dir = mkdtempSync(join(tmpdir(), 'mbr-cni-netconf-'));
  writeFileSync(join(dir, `10-${list.name}.conflist`), JSON.stringify(list, null, 2));
  return dir;
}

export interface CnitoolRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `cnitool <verb> <network> <netns path>` as an operator would run it. */
export function cnitool(tool: string, verb: 'add' | 'check' | 'del' | 'gc' | 'status', network: string, netnsPath: string, env: { cniPath: string; netconfPath: string; cniArgs?: string; ifname?: string }): CnitoolRun {
  const r = spawnSync(tool, [verb, network, netnsPath], {
    encoding: 'utf8',
    timeout: 120_000,
    env: {
      PATH: process.env['PATH'],
      CNI_PATH: env.cniPath,
      NETCONFPATH: env.netconfPath,
      ...(env.cniArgs ? { CNI_ARGS: env.cniArgs } : {}),
      ...(env.ifname ? { CNI_IFNAME: env.ifname } : {}),
    },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** cnitool derives the container id from the netns path: "cnitool-" + 20 hex of its SHA-512. */
export async function cnitoolContainerId(netnsPath: string): Promise<string> {
  const { createHash } = await import('node:crypto');
  return `cnitool-${createHash('sha512').update(netnsPath).digest('hex').slice(0, 20)}`;
}

/** libcni (inside cnitool) caches each ADD result here until DEL; attachments a test removed another way leave files. */
export const LIBCNI_CACHE = '/var/lib/cni/results';

export function removeLibcniCache(network: string): void {
  let names: string[];
  try {
    names = readdirSync(LIBCNI_CACHE);
  } catch {
    return;
  }
  for (const name of names) if (name.startsWith(`${network}-`)) rmSync(join(LIBCNI_CACHE, name), { force: true });
}

export const NETNS_PREFIX = `mbr-cni-${process.pid}-`;

export function createNetns(tag: string): { name: string; path: string } {
  const name = `${NETNS_PREFIX}${tag}`;
  execFileSync('ip', ['netns', 'add', name], { stdio: 'ignore' });
  return { name, path: `/var/run/netns/${name}` };
}

export function deleteNetns(name: string): void {
  try {
    execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
  } catch {
    /* already gone */
  }
}

/** Every netns this test process created. */
export function ownNetns(): string[] {
  const out = execFileSync('ip', ['-j', 'netns', 'list'], { encoding: 'utf8' }).trim();
  const list = out === '' ? [] : (JSON.parse(out) as Array<{ name: string }>);
  return list.map((n) => n.name).filter((n) => n.startsWith(NETNS_PREFIX));
}

export interface HostLink {
  ifname: string;
  ifindex: number;
  ifalias?: string;
  mtu: number;
  address: string;
  operstate: string;
  flags: string[];
}

/** Host links whose alias says the plugin created them for `network`. */
export function pluginLinks(network: string): HostLink[] {
  const links = JSON.parse(execFileSync('ip', ['-j', '-d', 'link', 'show'], { encoding: 'utf8' })) as HostLink[];
  return links.filter((l) => (l.ifalias ?? '').startsWith(`membrane-cni:${network}:`));
}

export function inNetns(netns: string, cmd: string, args: string[]): string {
  return execFileSync('ip', ['netns', 'exec', netns, cmd, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Whether one ping from `netns` to `ip` gets an answer within a second. */
export function pingOnce(netns: string, ip: string): boolean {
  const r = spawnSync('ip', ['netns', 'exec', netns, 'ping', '-c', '1', '-W', '1', '-q', ip], { stdio: 'ignore' });
  return r.status === 0;
}

export interface AgentProcess {
  child: ChildProcess;
  socket: string;
  stateDir: string;
  pinDir: string;
  logFile: string;
  /** Stops the agent (SIGTERM, then SIGKILL after 15 s) and removes its pins. */
  stop(): Promise<void>;
  /** stop(), then removes its state directory and log (kept when MEMBRANE_E2E_KEEP_LOGS is set). */
  cleanup(): Promise<void>;
}

/** Starts `membrane agent` (ts/agent/process.ts) for the lab and waits until /v1/healthz says ok. */
export async function startAgent(opts: { kubeconfig: string; nodeName: string; tag: string }): Promise<AgentProcess> {
  const stateDir = mkdtempSync(join(tmpdir(), `mbr-cni-agent-${opts.tag}-`));
  const pinDir = `/sys/fs/bpf/membrane-cni-e2e-${opts.tag}`;
  const logFile = join(stateDir, 'agent.log');
  const settings = { kubeconfig: opts.kubeconfig, nodeName: opts.nodeName, stateDir, pinDir, logFile, logLevel: 'debug' };
  const stop = async (child?: ChildProcess): Promise<void> => {
    if (child) await stopAgentProcess(child);
    rmSync(pinDir, { recursive: true, force: true });
  };
  let child: ChildProcess;
  try {
    child = (await startAgentProcess(settings, 120_000)).child;
  } catch (err) {
    await stop();
    throw new Error(`${(err as Error).message}\n${tail(logFile)}`);
  }
  const stopAndClean = async (): Promise<void> => {
    await stop(child);
    if (!process.env['MEMBRANE_E2E_KEEP_LOGS']) rmSync(stateDir, { recursive: true, force: true });
  };
  return { child, socket: agentSocketOf(settings), stateDir, pinDir, logFile, stop: () => stop(child), cleanup: stopAndClean };
}

export function tail(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
