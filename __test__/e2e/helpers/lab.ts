/**
 * Helpers for e2e tests that drive a real lab through the `membrane` CLI, with a
 * lab directory, ports and ranges of their own so they never touch a user's lab.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { envName } from '../../../ts/config/config.js';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export interface TestLabSettings {
  dir: string;
  etcdClientPort: number;
  etcdPeerPort: number;
  apiserverPort: number;
  controllerManagerPort: number;
  clusterCIDR: string;
  podCIDR: string;
  serviceCIDR: string;
  nodeName: string;
  /** 'none' (default for tests): control plane only, the test runs its own agent; 'simulated': agent + node simulator. */
  node?: 'simulated' | 'none';
}

/** Settings unlike the defaults (ports 2xxxx -> 3xxxx, 10.24x ranges -> 10.23x). */
export function testLabSettings(tag: string): TestLabSettings {
  return {
    dir: `/tmp/membrane-lab-test-${tag}`,
    etcdClientPort: 22790, // below the ephemeral port range (32768-60999)
    etcdPeerPort: 22800,
    apiserverPort: 22443,
    controllerManagerPort: 22257,
    clusterCIDR: '10.233.0.0/16',
    podCIDR: '10.233.7.0/24',
    serviceCIDR: '10.234.0.0/16',
    nodeName: 'membrane-e2e-node',
  };
}

export function labEnv(s: TestLabSettings, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  // Do not let a developer's own lab settings leak into the test lab (the binary cache is shared on purpose).
  for (const k of Object.keys(env)) if (k.startsWith('MEMBRANE_') && k !== 'MEMBRANE_LAB_CACHE_DIR' && k !== 'MEMBRANE_GO') delete env[k];
  for (const [k, v] of Object.entries(s)) env[envName(`lab.${k}`)] = String(v);
  return { ...env, ...extra };
}

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `membrane <args>` from source (tsx), as a user would. */
export function membrane(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 30 * 60_000): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import=tsx', join(REPO, 'ts', 'cli', 'main.ts'), ...args], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGINT'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Live processes whose command line mentions the lab directory. */
export function processesUsing(dir: string): { pid: number; argv0: string }[] {
  const out: { pid: number; argv0: string }[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) continue;
      const argv = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      if (argv.some((a) => a.includes(dir + '/')) && !argv.some((a) => a.endsWith('main.ts'))) out.push({ pid: Number(d), argv0: argv[0] ?? '' });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** True if a live (non-zombie) process has this pid and start time. */
export function sameProcessAlive(pid: number, startTime: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[0] !== 'Z' && Number(rest[19]) === startTime;
  } catch {
    return false;
  }
}
