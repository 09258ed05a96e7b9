/**
 * Runs `membrane agent` as a child process and waits for it: for the lab, the
 * benchmarks and the e2e tests (which kill it with -9 and start it again).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { callAgent } from '../api/client.js';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface AgentProcessSettings {
  kubeconfig: string;
  nodeName: string;
  stateDir: string;
  pinDir: string;
  /** stdout and stderr (pino JSON lines) are appended here. */
  logFile: string;
  logLevel?: string;
  /** Extra MEMBRANE_* settings. */
  env?: Record<string, string>;
}

export const agentSocketOf = (s: Pick<AgentProcessSettings, 'stateDir'>): string => join(s.stateDir, 'agent.sock');

/**
 * V8 settings the agent runs with (also in deploy/: the DaemonSet's NODE_OPTIONS):
 * a small young generation keeps the resident set low (about 35 MB less at
 * start) at the price of more frequent, cheap scavenges.
 */
export const AGENT_NODE_OPTIONS = '--max-semi-space-size=4';

export function agentProcessEnv(s: AgentProcessSettings): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('MEMBRANE_')) env[k] = v;
  return {
    ...env,
    MEMBRANE_KUBECONFIG: s.kubeconfig,
    MEMBRANE_NODE_NAME: s.nodeName,
    MEMBRANE_STATE_DIR: s.stateDir,
    MEMBRANE_API_SOCKET: agentSocketOf(s),
    MEMBRANE_PIN_DIR: s.pinDir,
    MEMBRANE_LOG_LEVEL: s.logLevel ?? 'info',
    NODE_OPTIONS: [process.env['NODE_OPTIONS'], AGENT_NODE_OPTIONS].filter(Boolean).join(' '),
    ...s.env,
  };
}

/** Starts the built CLI's `agent` verb and resolves once GET /v1/healthz is ok. */
export async function startAgentProcess(s: AgentProcessSettings, timeoutMs = 60_000): Promise<{ child: ChildProcess; readyMs: number }> {
  const cli = join(REPO, 'dist', 'cli', 'main.js');
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run npm run build first`);
  const out = openSync(s.logFile, 'a');
  const t0 = performance.now();
  const child = spawn(process.execPath, [cli, 'agent'], { cwd: REPO, env: agentProcessEnv(s), stdio: ['ignore', out, out] });
  closeSync(out);
  let exited: string | undefined;
  child.once('exit', (code, signal) => (exited = `exited with ${code ?? signal}`));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exited) throw new Error(`the agent ${exited} before it was ready; see ${s.logFile}`);
    try {
      const h = await callAgent<{ ok: boolean }>({ socketPath: agentSocketOf(s), method: 'GET', path: '/v1/healthz', timeoutMs: 1000 });
      if (h.ok) return { child, readyMs: performance.now() - t0 };
    } catch {
      // not listening or not ready yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the agent was not ready within ${timeoutMs} ms; see ${s.logFile}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** SIGTERM (or `signal`), then SIGKILL after 10 s. */
export async function stopAgentProcess(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill(signal);
  await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGKILL');
    await exited;
  }
}

/** Resident set size of a process, bytes (from /proc). */
export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : Number.NaN;
}
