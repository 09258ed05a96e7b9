/**
 * Endpoints persisted under <stateDir>/endpoints/<id>.json, so that a restarted
 * agent knows them. Writes are atomic (temporary file + rename). A file that
 * cannot be read back (truncated, edited by hand) is moved aside as
 * <id>.json.corrupt and reported, never silently dropped or half-loaded.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../log/logger.js';
import { endpointProblems, type Endpoint } from './endpoint.js';

export interface LoadedEndpoints {
  endpoints: Endpoint[];
  /** Files that were moved aside, with the reason. */
  rejected: Array<{ file: string; reason: string }>;
}

export class EndpointStore {
  readonly dir: string;

  constructor(
    stateDir: string,
    private readonly log: Logger,
  ) {
    this.dir = join(stateDir, 'endpoints');
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  private path(id: number): string {
    return join(this.dir, `${id}.json`);
  }

  save(ep: Endpoint): void {
    const problems = endpointProblems(ep);
    if (problems.length > 0) throw new Error(`refusing to persist endpoint ${ep.id}: ${problems.join('; ')}`);
    const tmp = `${this.path(ep.id)}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify(ep, null, 2) + '\n', { mode: 0o600 });
    renameSync(tmp, this.path(ep.id));
  }

  remove(id: number): void {
    rmSync(this.path(id), { force: true });
  }

  load(): LoadedEndpoints {
    const endpoints: Endpoint[] = [];
    const rejected: LoadedEndpoints['rejected'] = [];
    for (const file of readdirSync(this.dir).sort()) {
      if (file.includes('.tmp-')) {
        rmSync(join(this.dir, file), { force: true }); // an interrupted write; the previous file is intact
        continue;
      }
      if (!/^\d+\.json$/.test(file)) continue;
      const path = join(this.dir, file);
      let reason: string | undefined;
      let ep: Endpoint | undefined;
      try {
        ep = JSON.parse(readFileSync(path, 'utf8')) as Endpoint;
        const problems = endpointProblems(ep);
        if (problems.length > 0) reason = problems.join('; ');
        else if (`${ep.id}.json` !== file) reason = `file name does not match endpoint id ${ep.id}`;
      } catch (err) {
        reason = `not valid JSON: ${(err as Error).message}`;
      }
      if (reason !== undefined || ep === undefined) {
        renameSync(path, `${path}.corrupt`);
        rejected.push({ file, reason: reason ?? 'unreadable' });
        this.log.error({ file: path, reason }, 'endpoint state file is invalid; moved aside as .corrupt');
        continue;
      }
      endpoints.push(ep);
    }
    return { endpoints, rejected };
  }
}
