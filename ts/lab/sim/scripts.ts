/**
 * How the simulator and `lab probe` run code inside a pod's network namespace:
 * `ip netns exec <netns> node <script> <json>`. `ip netns exec` enters the
 * namespace and then execs node, so the pid we get is the server's own (it is
 * stopped by that pid). From dist/ the compiled .js runs as is; from ts/ (tsx,
 * the tests) node loads tsx first.
 */
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { repoRoot } from '../repo.js';

/** Network namespaces of simulated pods: mbr-sim-<pod uid>. */
export const SIM_NETNS_PREFIX = 'mbr-sim-';

const UID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function simNetnsName(podUid: string): string {
  if (!UID.test(podUid)) throw new Error(`pod uid ${JSON.stringify(podUid)} is not a UUID`);
  return SIM_NETNS_PREFIX + podUid;
}

export function netnsPath(name: string): string {
  return join('/var/run/netns', name);
}

export type SimScript = 'pod-server' | 'probe-client';

export interface ScriptCommand {
  cmd: string;
  args: string[];
  cwd: string;
}

/** The command that runs `script` with `arg` inside network namespace `netns`. */
export function netnsScriptCommand(netns: string, script: SimScript, arg: string): ScriptCommand {
  return { cmd: 'ip', args: ['netns', 'exec', netns, ...nodeCommand(script), arg], cwd: repoRoot() };
}

function mtime(path: string): number | undefined {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

/** node [--import=tsx] <script file>, the fastest way that runs the current source. */
export function nodeCommand(script: SimScript): string[] {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.js')) return [process.execPath, join(dirname(here), `${script}.js`)];
  const source = join(dirname(here), `${script}.ts`);
  if (!existsSync(source)) throw new Error(`${source} is missing`);
  const compiled = join(repoRoot(), 'dist', 'lab', 'sim', `${script}.js`);
  const built = mtime(compiled);
  if (built !== undefined && built >= (mtime(source) ?? Infinity)) return [process.execPath, compiled];
  return [process.execPath, `--import=${import.meta.resolve('tsx')}`, source];
}
