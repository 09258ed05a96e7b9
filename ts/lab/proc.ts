/**
 * Processes of the lab: started detached (their own session, so they outlive the
 * CLI and a Ctrl-C in its terminal), identified by pid AND kernel start time so a
 * recycled pid is never taken for ours, stopped with SIGTERM then SIGKILL.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, readlinkSync } from 'node:fs';

export interface ProcessRecord {
  pid: number;
  /** Field 22 of /proc/<pid>/stat: clock ticks after boot when the process started. */
  startTime: number;
  /** The executable we started. */
  binary: string;
}

interface ProcStat {
  state: string;
  startTime: number;
  ppid: number;
}

export function readProcStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm is in parentheses and may contain spaces or ')'; fields resume after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); field N is rest[N - 3].
  return { state: rest[0] ?? '?', ppid: Number(rest[1]), startTime: Number(rest[19]) };
}

/** A live process with this pid exists (zombies count as gone). */
export function isAlive(pid: number): boolean {
  const st = readProcStat(pid);
  return st !== undefined && st.state !== 'Z' && st.state !== 'X';
}

/** The process is alive and is the one we recorded. */
export function isOurs(rec: ProcessRecord): boolean {
  const st = readProcStat(rec.pid);
  return st !== undefined && st.state !== 'Z' && st.state !== 'X' && st.startTime === rec.startTime;
}

export function processName(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

export function processExe(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return undefined;
  }
}

/** Starts a long-running component detached, output appended to logFile. */
export function spawnDetached(binary: string, args: string[], logFile: string, cwd: string): ProcessRecord {
  const fd = openSync(logFile, 'a', 0o600);
  try {
    const child = spawn(binary, args, { cwd, detached: true, stdio: ['ignore', fd, fd], env: componentEnv() });
    if (child.pid === undefined) throw new Error(`cannot start ${binary}`);
    child.unref();
    // Swallow a late 'error' (e.g. ENOENT) here; the caller sees the process gone.
    child.on('error', () => undefined);
    const st = readProcStat(child.pid);
    return { pid: child.pid, startTime: st?.startTime ?? -1, binary };
  } finally {
    closeSync(fd);
  }
}

/** A small, predictable environment: no proxies (everything is 127.0.0.1), no inherited KUBECONFIG. */
function componentEnv(): NodeJS.ProcessEnv {
  const keep = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR'];
  const env: NodeJS.ProcessEnv = {};
  for (const k of keep) if (process.env[k] !== undefined) env[k] = process.env[k];
  env['NO_PROXY'] = '127.0.0.1,localhost';
  return env;
}

export interface StopResult {
  pid: number;
  /** 'not-running': already gone or the pid now belongs to another process. */
  outcome: 'terminated' | 'killed' | 'not-running';
  seconds: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** SIGTERM, wait up to graceMs, then SIGKILL; only if the pid is still the one we started. */
export async function stopProcess(rec: ProcessRecord, graceMs = 10_000): Promise<StopResult> {
  const started = Date.now();
  const secs = () => Math.round((Date.now() - started) / 100) / 10;
  if (!isOurs(rec)) return { pid: rec.pid, outcome: 'not-running', seconds: 0 };
  try {
    process.kill(rec.pid, 'SIGTERM');
  } catch {
    return { pid: rec.pid, outcome: 'not-running', seconds: 0 };
  }
  while (Date.now() - started < graceMs) {
    if (!isOurs(rec)) return { pid: rec.pid, outcome: 'terminated', seconds: secs() };
    await sleep(100);
  }
  try {
    process.kill(rec.pid, 'SIGKILL');
  } catch {
    // gone between the check and the kill
  }
  const killedAt = Date.now();
  while (isOurs(rec) && Date.now() - killedAt < 5_000) await sleep(50);
  if (isOurs(rec)) throw new Error(`pid ${rec.pid} (${rec.binary}) survived SIGKILL`);
  return { pid: rec.pid, outcome: 'killed', seconds: secs() };
}

/** Last n lines of a file, or a note that it cannot be read. */
export function tailFile(path: string, n: number): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    return `(cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
  }
  const lines = text.replace(/\n+$/, '').split('\n');
  return lines.slice(-n).join('\n');
}
