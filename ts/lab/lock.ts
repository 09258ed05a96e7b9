/**
 * A lock file holding the pid (and start time) of its owner. A lock whose owner
 * is gone is taken over; a live owner is waited for, or reported.
 */
import { openSync, readFileSync, rmSync, writeSync, closeSync } from 'node:fs';
import { readProcStat } from './proc.js';

export interface Lock {
  path: string;
  release: () => void;
}

export interface LockHolder {
  pid: number;
  startTime: number;
}

export class LockBusyError extends Error {
  override name = 'LockBusyError';
  constructor(
    readonly path: string,
    readonly holder: LockHolder,
  ) {
    super(`${path} is held by pid ${holder.pid}`);
  }
}

function readHolder(path: string): LockHolder | undefined {
  try {
    const v = JSON.parse(readFileSync(path, 'utf8')) as LockHolder;
    return typeof v.pid === 'number' ? v : undefined;
  } catch {
    return undefined;
  }
}

function holderAlive(h: LockHolder): boolean {
  const st = readProcStat(h.pid);
  return st !== undefined && st.state !== 'Z' && st.startTime === h.startTime;
}

function tryAcquire(path: string): Lock | LockHolder {
  const me: LockHolder = { pid: process.pid, startTime: readProcStat(process.pid)?.startTime ?? -1 };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, JSON.stringify(me));
      closeSync(fd);
      let released = false;
      return {
        path,
        release: () => {
          if (released) return;
          released = true;
          const h = readHolder(path);
          if (h && h.pid === me.pid && h.startTime === me.startTime) rmSync(path, { force: true });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = readHolder(path);
      if (holder && holderAlive(holder)) return holder;
      // Stale (owner died) or half-written: take it over.
      rmSync(path, { force: true });
    }
  }
  throw new Error(`cannot take the lock ${path}`);
}

export interface AcquireOptions {
  /** How long to wait for a live holder; 0 fails at once with LockBusyError. */
  waitMs?: number;
  signal?: AbortSignal | undefined;
  onWait?: (holder: LockHolder) => void;
}

export async function acquireLock(path: string, opts: AcquireOptions = {}): Promise<Lock> {
  const deadline = Date.now() + (opts.waitMs ?? 0);
  let told = false;
  for (;;) {
    const r = tryAcquire(path);
    if ('release' in r) return r;
    if (Date.now() >= deadline) throw new LockBusyError(path, r);
    if (opts.signal?.aborted) throw new Error('interrupted while waiting for a lock');
    if (!told) {
      opts.onWait?.(r);
      told = true;
    }
    await new Promise((res) => setTimeout(res, 1000));
  }
}
