/**
 * Helpers for e2e tests of the Kubernetes streams and identities: a lab of the
 * test's own (directory, ports and ranges given by the test file), a log
 * capture, polling, and client-node conveniences.
 */
import { rmSync } from 'node:fs';
import { Writable } from 'node:stream';
import { ApiException, CoreV1Api, KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { labKubeConfig } from '../../../ts/lab/kube.js';
import { createLogger, type Logger } from '../../../ts/log/logger.js';
import { labEnv, membrane, type TestLabSettings } from './lab.js';

export const MINUTE = 60_000;

export interface LabPorts {
  etcdClientPort: number;
  etcdPeerPort: number;
  apiserverPort: number;
  controllerManagerPort: number;
  /** First two octets of the pod range, e.g. "10.235" -> 10.235.0.0/16, podCIDR 10.235.7.0/24. */
  podNet: string;
  /** First two octets of the service range, e.g. "10.236" -> 10.236.0.0/16. */
  serviceNet: string;
}

export function k8sLabSettings(tag: string, p: LabPorts): TestLabSettings {
  return {
    dir: `/tmp/membrane-lab-test-${tag}`,
    etcdClientPort: p.etcdClientPort,
    etcdPeerPort: p.etcdPeerPort,
    apiserverPort: p.apiserverPort,
    controllerManagerPort: p.controllerManagerPort,
    clusterCIDR: `${p.podNet}.0.0/16`,
    podCIDR: `${p.podNet}.7.0/24`,
    serviceCIDR: `${p.serviceNet}.0.0/16`,
    nodeName: 'membrane-e2e-node',
    node: 'none',
  };
}

export function requireRoot(what: string): void {
  if (process.getuid?.() !== 0) throw new Error(`${what} e2e tests need root (the lab adds blackhole routes and binds its ports); run npm test as root`);
}

/** `lab build` (cached after the first time) and `lab up`; returns the admin KubeConfig. */
export async function startLab(lab: TestLabSettings, extraEnv: Record<string, string> = {}): Promise<KubeConfig> {
  const env = labEnv(lab, extraEnv);
  const build = await membrane(['lab', 'build'], env);
  if (build.code !== 0) throw new Error(`membrane lab build failed:\n${build.stderr}`);
  const up = await membrane(['lab', 'up'], env, 10 * MINUTE);
  if (up.code !== 0) throw new Error(`membrane lab up failed:\n${up.stderr}`);
  return labKubeConfig({ dir: lab.dir });
}

export async function stopLab(lab: TestLabSettings): Promise<void> {
  await membrane(['lab', 'down', '--purge'], labEnv(lab), 2 * MINUTE);
  rmSync(lab.dir, { recursive: true, force: true });
}

/** A KubeConfig like `kc` whose server is `server` (e.g. a proxy in front of the apiserver). */
export function withServer(kc: KubeConfig, server: string): KubeConfig {
  const out = new KubeConfig();
  out.loadFromOptions({
    clusters: kc.clusters.map((c) => ({ ...c, server })),
    users: kc.users,
    contexts: kc.contexts,
    currentContext: kc.currentContext,
  });
  return out;
}

export interface CapturedLog {
  log: Logger;
  lines: () => Record<string, unknown>[];
  count: (msg: string) => number;
}

/** A debug-level logger whose lines the test can read (and that also go to a file when MEMBRANE_E2E_LOG is set). */
export function captureLog(component: string): CapturedLog {
  const buf: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      const text = chunk.toString();
      buf.push(...text.split('\n').filter(Boolean));
      if (process.env['MEMBRANE_E2E_LOG']) process.stderr.write(text);
      cb();
    },
  });
  const lines = () => buf.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { log: createLogger({ component, level: 'debug', destination: sink }), lines, count: (msg) => lines().filter((l) => l['msg'] === msg).length };
}

export async function until<T>(probe: () => T | undefined | false | Promise<T | undefined | false>, what: string, timeoutMs = 30_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export function apiCode(err: unknown): number | undefined {
  return err instanceof ApiException ? err.code : undefined;
}

/** Creates a namespace (with labels) and waits until Pods can be created in it (its default ServiceAccount exists). */
export async function createNamespace(kc: KubeConfig, name: string, labels: Record<string, string> = {}): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name, labels } } });
  await until(
    async () => {
      try {
        await core.readNamespacedServiceAccount({ namespace: name, name: 'default' });
        return true;
      } catch (err) {
        if (apiCode(err) === 404) return false;
        throw err;
      }
    },
    `the default ServiceAccount of ${name}`,
    60_000,
    100,
  );
}

export function podSpec(name: string, labels: Record<string, string>, nodeName?: string): V1Pod {
  const pod: V1Pod = { metadata: { name, labels }, spec: { containers: [{ name: 'main', image: 'membrane.io/echo:lab' }] } };
  if (nodeName) pod.spec!.nodeName = nodeName;
  return pod;
}

export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? NaN;
}
