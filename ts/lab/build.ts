/**
 * Builds the lab's control plane (etcd, kube-apiserver, kube-controller-manager)
 * from source at the versions pinned in ts/lab/components/go.mod, through the Go
 * module proxy, and caches the binaries outside the repository:
 *
 *   <lab.cacheDir>/lab-bin/<key>/{etcd,kube-apiserver,kube-controller-manager,manifest.json}
 *
 * The key is a hash of go.mod, go.sum and the build recipe below, so bumping a
 * version (or changing how we build) makes a new key and a rebuild, and a second
 * `lab up` finds the binaries and builds nothing. A build goes into a temporary
 * directory that is renamed onto the key only after every binary has been built
 * and has answered --version correctly; an interrupted build is never mistaken
 * for a cached one. Concurrent builders of the same key take turns on a lock file.
 *
 * Usable from a setup script: `membrane lab build`, or import ensureLabBinaries.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants, createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Logger } from '../log/logger.js';
import { componentsDir } from './repo.js';
import { isAlive, tailFile } from './proc.js';
import { acquireLock } from './lock.js';

/** Bump when the way binaries are built changes (flags, stamping, layout). */
const RECIPE_REVISION = 1;

export const BINARY_NAMES = ['etcd', 'kube-apiserver', 'kube-controller-manager'] as const;
export type BinaryName = (typeof BINARY_NAMES)[number];

export interface PinnedVersions {
  /** k8s.io/kubernetes, e.g. v1.34.4 */
  kubernetes: string;
  /** go.etcd.io/etcd/server/v3, e.g. v3.6.5 */
  etcd: string;
}

export interface BuildManifest {
  key: string;
  recipeRevision: number;
  versions: PinnedVersions;
  goVersion: string;
  builtAt: string;
  buildSeconds: number;
  ldflags: string;
  binaries: Record<BinaryName, { sha256: string; bytes: number }>;
}

export interface LabBinaries {
  key: string;
  dir: string;
  paths: Record<BinaryName, string>;
  manifest: BuildManifest;
  /** True when this call built them, false when they came from the cache. */
  built: boolean;
}

export class LabBuildError extends Error {
  override name = 'LabBuildError';
  constructor(
    message: string,
    readonly logFile?: string,
  ) {
    super(message);
  }
}

export interface BuildOptions {
  /** lab.cacheDir */
  cacheDir: string;
  log: Logger;
  /** Rebuild even when the key is cached. */
  force?: boolean;
  signal?: AbortSignal;
  /** Seconds between progress lines of a long build (default 30). */
  progressEvery?: number;
}

/** Reads the pinned versions from go.mod so that the stamp follows a bump. */
export function pinnedVersions(goMod: string = readFileSync(join(componentsDir(), 'go.mod'), 'utf8')): PinnedVersions {
  const find = (path: string): string => {
    const re = new RegExp(`^\\s*(?:require\\s+)?${path.replace(/[./]/g, (c) => '\\' + c)}\\s+(v[0-9][^\\s]*)`, 'm');
    const m = re.exec(goMod);
    if (!m) throw new LabBuildError(`ts/lab/components/go.mod does not require ${path}`);
    return m[1]!;
  };
  return { kubernetes: find('k8s.io/kubernetes'), etcd: find('go.etcd.io/etcd/server/v3') };
}

/** The -X flags that make GET /version and --version report the pinned release. */
export function kubernetesLdflags(version: string, buildDate: string): string {
  const m = /^v(\d+)\.(\d+)\./.exec(version);
  if (!m) throw new LabBuildError(`k8s.io/kubernetes version ${version} is not vMAJOR.MINOR.PATCH`);
  const pkg = 'k8s.io/component-base/version';
  const vars: [string, string][] = [
    ['gitVersion', version],
    ['gitMajor', m[1]!],
    ['gitMinor', m[2]!],
    // The module proxy serves source archives without the commit they came from;
    // an empty commit is the honest answer.
    ['gitCommit', ''],
    // Kubernetes' own build scripts say "archive" for a tree that came from an archive.
    ['gitTreeState', 'archive'],
    ['buildDate', buildDate],
  ];
  return ['-s', '-w', ...vars.map(([k, v]) => `-X ${pkg}.${k}=${v}`)].join(' ');
}

/** Hash of go.mod + go.sum + recipe: the cache key. */
export function buildKey(dir: string = componentsDir()): string {
  const h = createHash('sha256');
  h.update(`membrane-lab-bin recipe ${RECIPE_REVISION} ${process.platform}/${process.arch} cgo=0 trimpath\n`);
  for (const f of ['go.mod', 'go.sum']) {
    h.update(`--- ${f}\n`);
    h.update(readFileSync(join(dir, f)));
  }
  return h.digest('hex').slice(0, 16);
}

export function labBinDir(cacheDir: string): string {
  return join(cacheDir, 'lab-bin');
}

/** Returns the cached binaries for the current key, or undefined if not built. */
export function cachedLabBinaries(cacheDir: string): LabBinaries | undefined {
  const key = buildKey();
  const dir = join(labBinDir(cacheDir), key);
  const manifestPath = join(dir, 'manifest.json');
  if (!existsSync(manifestPath)) return undefined;
  let manifest: BuildManifest;
  try {
    manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as BuildManifest;
  } catch {
    return undefined;
  }
  const paths = binaryPaths(dir);
  for (const p of Object.values(paths)) {
    try {
      accessSync(p, constants.X_OK);
    } catch {
      return undefined;
    }
  }
  return { key, dir, paths, manifest, built: false };
}

function binaryPaths(dir: string): Record<BinaryName, string> {
  return { etcd: join(dir, 'etcd'), 'kube-apiserver': join(dir, 'kube-apiserver'), 'kube-controller-manager': join(dir, 'kube-controller-manager') };
}

/** The go command: MEMBRANE_GO, then PATH, then /usr/local/go/bin/go. */
export function findGo(env: NodeJS.ProcessEnv = process.env): string {
  const candidates = [env['MEMBRANE_GO'], ...(env['PATH'] ?? '').split(delimiter).filter(Boolean).map((d) => join(d, 'go')), '/usr/local/go/bin/go'];
  for (const c of candidates) {
    if (!c) continue;
    try {
      accessSync(c, constants.X_OK);
      if (statSync(c).isFile()) return c;
    } catch {
      // try the next one
    }
  }
  throw new LabBuildError('the Go toolchain is needed to build the lab control plane from source, and no go command was found (looked at MEMBRANE_GO, PATH and /usr/local/go/bin/go); install Go >= 1.24');
}

/** Builds the binaries unless the current key is cached; returns where they are. */
export async function ensureLabBinaries(opts: BuildOptions): Promise<LabBinaries> {
  const log = opts.log.child({ subsystem: 'lab-build' });
  if (!opts.force) {
    const cached = cachedLabBinaries(opts.cacheDir);
    if (cached) {
      log.debug({ key: cached.key, dir: cached.dir }, 'control-plane binaries found in the cache');
      return cached;
    }
  }
  const root = labBinDir(opts.cacheDir);
  mkdirSync(root, { recursive: true });
  const key = buildKey();
  const lock = await acquireLock(join(root, `${key}.lock`), {
    signal: opts.signal,
    onWait: (holder) => log.info({ key, holder }, 'another process is building these binaries; waiting for it'),
    waitMs: 60 * 60 * 1000,
  });
  try {
    // Someone else may have finished the build while we waited.
    if (!opts.force) {
      const cached = cachedLabBinaries(opts.cacheDir);
      if (cached) return cached;
    }
    return await build(key, root, opts, log);
  } finally {
    lock.release();
  }
}

async function build(key: string, root: string, opts: BuildOptions, log: Logger): Promise<LabBinaries> {
  removeStaleTempDirs(root, log);
  const go = findGo();
  const goVersion = runQuiet(go, ['env', 'GOVERSION']).trim();
  const versions = pinnedVersions();
  const tmp = join(root, `.build-${key}-${process.pid}`);
  const logFile = join(root, `build-${key}.log`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const buildDate = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const ldflags = kubernetesLdflags(versions.kubernetes, buildDate);
  const started = Date.now();
  log.info({ key, versions, go: goVersion, logFile }, 'building the lab control plane from source (cold builds take several minutes)');
  writeFileSync(logFile, `# membrane lab build ${key} at ${buildDate}\n# ${goVersion}, k8s.io/kubernetes ${versions.kubernetes}, etcd ${versions.etcd}\n`);

  const steps: { binaries: BinaryName[]; args: string[] }[] = [
    { binaries: ['etcd'], args: ['-ldflags', '-s -w', '-o', join(tmp, 'etcd'), 'go.etcd.io/etcd/server/v3'] },
    {
      binaries: ['kube-apiserver', 'kube-controller-manager'],
      args: ['-ldflags', ldflags, '-o', tmp + '/', 'k8s.io/kubernetes/cmd/kube-apiserver', 'k8s.io/kubernetes/cmd/kube-controller-manager'],
    },
  ];
  try {
    for (const step of steps) {
      await goBuild(go, step.binaries, ['build', '-trimpath', '-v', ...step.args], logFile, opts, log, started);
    }
    const paths = binaryPaths(tmp);
    verifyVersion(paths['kube-apiserver'], ['--version'], `Kubernetes ${versions.kubernetes}`, logFile);
    verifyVersion(paths['kube-controller-manager'], ['--version'], `Kubernetes ${versions.kubernetes}`, logFile);
    verifyVersion(paths.etcd, ['--version'], `etcd Version: ${versions.etcd.replace(/^v/, '')}`, logFile);
    const manifest: BuildManifest = {
      key,
      recipeRevision: RECIPE_REVISION,
      versions,
      goVersion,
      builtAt: buildDate,
      buildSeconds: Math.round((Date.now() - started) / 1000),
      ldflags,
      binaries: Object.fromEntries(
        BINARY_NAMES.map((b) => {
          const data = readFileSync(paths[b]);
          return [b, { sha256: createHash('sha256').update(data).digest('hex'), bytes: data.length }];
        }),
      ) as BuildManifest['binaries'],
    };
    writeFileSync(join(tmp, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    const dir = join(root, key);
    rmSync(dir, { recursive: true, force: true }); // only reached with --force or a broken entry
    renameSync(tmp, dir);
    log.info({ key, dir, seconds: manifest.buildSeconds }, 'lab control plane built and cached');
    return { key, dir, paths: binaryPaths(dir), manifest, built: true };
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

function goBuild(go: string, binaries: BinaryName[], args: string[], logFile: string, opts: BuildOptions, log: Logger, buildStarted: number): Promise<void> {
  const what = binaries.join(', ');
  const stepStarted = Date.now();
  log.info({ binaries }, `building ${what}`);
  return new Promise((resolve, reject) => {
    const out = createWriteStream(logFile, { flags: 'a' });
    out.write(`\n$ go ${args.join(' ')}\n`);
    const child = spawn(go, args, {
      cwd: componentsDir(),
      env: {
        ...process.env,
        // Static binaries, as Kubernetes releases its server binaries.
        CGO_ENABLED: '0',
        // Use the installed Go; go.mod's go line is older, so nothing is downloaded.
        GOTOOLCHAIN: 'local',
        // go.sum is complete; a build never edits it.
        GOFLAGS: '-mod=readonly',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let packages = 0;
    const count = (chunk: Buffer) => {
      out.write(chunk);
      for (const b of chunk) if (b === 10) packages++;
    };
    child.stdout.on('data', count);
    child.stderr.on('data', count);
    const every = (opts.progressEvery ?? 30) * 1000;
    const timer = setInterval(() => {
      log.info({ binaries, stepSeconds: Math.round((Date.now() - stepStarted) / 1000), totalSeconds: Math.round((Date.now() - buildStarted) / 1000), packagesCompiled: packages }, `still building ${what}`);
    }, every);
    const onAbort = () => child.kill('SIGINT');
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const finish = (err?: Error) => {
      clearInterval(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      out.end(() => (err ? reject(err) : resolve()));
    };
    child.on('error', (err) => finish(new LabBuildError(`cannot run ${go}: ${err.message}`, logFile)));
    child.on('close', (code, sig) => {
      if (opts.signal?.aborted) return finish(new LabBuildError(`the build of ${what} was interrupted; nothing was cached`, logFile));
      if (code === 0) {
        log.info({ binaries, seconds: Math.round((Date.now() - stepStarted) / 1000), packagesCompiled: packages }, `built ${what}`);
        return finish();
      }
      // Let the log stream flush before reading its tail.
      out.end(() => {
        clearInterval(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        const tail = tailFile(logFile, 15);
        reject(new LabBuildError(`building ${what} failed (go build ${sig ? `killed by ${sig}` : `exit ${code}`}); read the build log ${logFile}. Last lines:\n${tail}`, logFile));
      });
    });
  });
}

function verifyVersion(binary: string, args: string[], expected: string, logFile: string): void {
  const out = runQuiet(binary, args);
  if (!out.includes(expected)) {
    throw new LabBuildError(`${binary} ${args.join(' ')} printed "${out.trim().split('\n')[0]}", expected "${expected}"; the build is not what go.mod pins (build log ${logFile})`, logFile);
  }
}

function runQuiet(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, GOTOOLCHAIN: 'local' }, timeout: 60_000 });
  if (r.error) throw new LabBuildError(`cannot run ${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new LabBuildError(`${cmd} ${args.join(' ')} failed (exit ${r.status}): ${(r.stderr || r.stdout).trim()}`);
  return r.stdout + r.stderr;
}

/** Temp dirs of builders that died (killed, machine reset) are removed. */
function removeStaleTempDirs(root: string, log: Logger): void {
  for (const name of readdirSync(root)) {
    const m = /^\.build-[0-9a-f]+-(\d+)$/.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid !== process.pid && isAlive(pid)) continue;
    rmSync(join(root, name), { recursive: true, force: true });
    log.info({ dir: join(root, name) }, 'removed the leftovers of an interrupted build');
  }
}
