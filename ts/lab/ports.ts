/**
 * Port checks before anything starts, so a port in use is reported with the
 * component that wanted it and how to pick another one, instead of a component
 * crashing with "address already in use" deep in its log.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { envName } from '../config/config.js';
import { processName } from './proc.js';

export interface PortClaim {
  port: number;
  component: string;
  /** The config key that sets it, e.g. lab.apiserverPort. */
  key: string;
}

export class PortInUseError extends Error {
  override name = 'PortInUseError';
  constructor(
    readonly claim: PortClaim,
    readonly holder: string | undefined,
  ) {
    super(
      `port ${claim.port} on 127.0.0.1 is already in use${holder ? ` (by ${holder})` : ''}; ${claim.component} needs it. ` +
        `Free it, or choose another port: set ${claim.key} in the config file (--config / MEMBRANE_CONFIG) or ${envName(claim.key)}=<port> in the environment.`,
    );
  }
}

export function portFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') resolve(false);
      else reject(err);
    });
    srv.listen({ host, port, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

/** Throws PortInUseError for the first claimed port that is taken, and on duplicates within the lab. */
export async function checkPorts(claims: PortClaim[]): Promise<void> {
  const seen = new Map<number, PortClaim>();
  for (const c of claims) {
    const other = seen.get(c.port);
    if (other) throw new Error(`${c.key} and ${other.key} are both ${c.port}; ${c.component} and ${other.component} need ports of their own`);
    seen.set(c.port, c);
  }
  for (const c of claims) {
    if (!(await portFree(c.port))) throw new PortInUseError(c, describeListener(c.port));
  }
}

/** "pid 1234 (node)" for the process listening on a TCP port, when /proc tells. */
export function describeListener(port: number): string | undefined {
  const inodes = new Set<string>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      const local = f[1];
      if (!local || f[3] !== '0A') continue; // 0A = LISTEN
      const portHex = local.slice(local.lastIndexOf(':') + 1);
      if (parseInt(portHex, 16) === port && f[9]) inodes.add(f[9]);
    }
  }
  if (inodes.size === 0) return undefined;
  for (const pidDir of readdirSync('/proc')) {
    if (!/^\d+$/.test(pidDir)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pidDir}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pidDir}/fd/${fd}`));
        if (m && inodes.has(m[1]!)) {
          const name = processName(Number(pidDir));
          return `pid ${pidDir}${name ? ` (${name})` : ''}`;
        }
      } catch {
        // fd closed meanwhile
      }
    }
  }
  return undefined;
}
