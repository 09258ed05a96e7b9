/**
 * Configuration shared by the agent, the CLI and the lab.
 *
 * Sources, later ones winning: built-in defaults, a YAML or JSON file
 * (`--config PATH` or MEMBRANE_CONFIG), MEMBRANE_* environment variables, and
 * explicit overrides (CLI flags). Parsing and validation are pure functions;
 * only `loadConfig` touches the file system. A bad value is reported with the
 * key that holds it and where it came from, and nothing is half-applied.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { isLogLevel, LOG_LEVELS } from '../log/logger.js';
import type { LevelWithSilent } from 'pino';

export interface LabConfig {
  /** Working directory of a running lab: PKI, kubeconfig, logs, etcd data, pid files. */
  dir: string;
  /** Where the control-plane binaries built from source are cached between runs. */
  cacheDir: string;
  nodeName: string;
  etcdClientPort: number;
  etcdPeerPort: number;
  apiserverPort: number;
  controllerManagerPort: number;
  /** Whole pod range of the lab cluster; the node's podCIDR is carved from it. */
  clusterCIDR: string;
  podCIDR: string;
  serviceCIDR: string;
  /** What runs on the lab's node after the control plane: the agent and the node simulator, or nothing (tests and benchmarks that run their own agent). */
  node: LabNodeMode;
}

export const LAB_NODE_MODES = ['simulated', 'none'] as const;
export type LabNodeMode = (typeof LAB_NODE_MODES)[number];

export interface IdentityConfig {
  /** An identity no endpoint has used for this long is deleted. */
  gcGraceSeconds: number;
  /** How often the collector looks for unused identities. */
  gcIntervalSeconds: number;
  /** How often a node re-stamps the identities it uses (at most a third of the grace). */
  refreshSeconds: number;
  /** Comma-separated label key prefixes left out of identities (besides the built-in ones). */
  excludeLabelPrefixes: string;
  /** Comma-separated label keys left out of identities. */
  excludeLabelKeys: string;
  /** Comma-separated label keys kept even when a built-in rule would drop them. */
  includeLabelKeys: string;
}

export interface MembraneConfig {
  nodeName: string;
  clusterName: string;
  /** Agent state (endpoints, IPAM) and the API socket live here. */
  stateDir: string;
  apiSocket: string;
  /** Mount point of bpffs; mounted by the agent when absent. */
  bpffsRoot: string;
  /** Directory under bpffs that holds every pinned map, program and link of this node. */
  pinDir: string;
  /** Prometheus listener, host:port; 127.0.0.1 unless told otherwise. */
  metricsAddress: string;
  logLevel: LevelWithSilent;
  /** Path of a kubeconfig; empty means in-cluster configuration. */
  kubeconfig: string;
  identity: IdentityConfig;
  lab: LabConfig;
}

export class ConfigError extends Error {
  constructor(
    readonly key: string,
    readonly source: string,
    detail: string,
  ) {
    super(`config ${key} (from ${source}): ${detail}`);
    this.name = 'ConfigError';
  }
}

export function defaultConfig(home: string = homedir()): MembraneConfig {
  const stateDir = '/var/run/membrane';
  return {
    nodeName: 'membrane-lab-node',
    clusterName: 'default',
    stateDir,
    apiSocket: join(stateDir, 'agent.sock'),
    bpffsRoot: '/sys/fs/bpf',
    pinDir: '/sys/fs/bpf/membrane',
    metricsAddress: '127.0.0.1:9962',
    logLevel: 'info',
    kubeconfig: '',
    identity: { gcGraceSeconds: 900, gcIntervalSeconds: 60, refreshSeconds: 300, excludeLabelPrefixes: '', excludeLabelKeys: '', includeLabelKeys: '' },
    lab: {
      dir: '/var/lib/membrane-lab',
      cacheDir: join(home, '.cache', 'membrane'),
      nodeName: 'membrane-lab-node',
      etcdClientPort: 23790,
      etcdPeerPort: 23800,
      apiserverPort: 16443,
      controllerManagerPort: 16257,
      clusterCIDR: '10.244.0.0/16',
      podCIDR: '10.244.0.0/24',
      serviceCIDR: '10.96.0.0/16',
      node: 'simulated',
    },
  };
}

type Kind = 'string' | 'port' | 'cidr' | 'hostport' | 'loglevel' | 'path' | 'seconds' | 'labnode';

/** Every settable key, its kind, and the environment variable that can set it. */
const KEYS: Record<string, Kind> = {
  nodeName: 'string',
  clusterName: 'string',
  stateDir: 'path',
  apiSocket: 'path',
  bpffsRoot: 'path',
  pinDir: 'path',
  metricsAddress: 'hostport',
  logLevel: 'loglevel',
  kubeconfig: 'string',
  'identity.gcGraceSeconds': 'seconds',
  'identity.gcIntervalSeconds': 'seconds',
  'identity.refreshSeconds': 'seconds',
  'identity.excludeLabelPrefixes': 'string',
  'identity.excludeLabelKeys': 'string',
  'identity.includeLabelKeys': 'string',
  'lab.dir': 'path',
  'lab.cacheDir': 'path',
  'lab.nodeName': 'string',
  'lab.etcdClientPort': 'port',
  'lab.etcdPeerPort': 'port',
  'lab.apiserverPort': 'port',
  'lab.controllerManagerPort': 'port',
  'lab.clusterCIDR': 'cidr',
  'lab.podCIDR': 'cidr',
  'lab.serviceCIDR': 'cidr',
  'lab.node': 'labnode',
};

/** MEMBRANE_NODE_NAME -> nodeName, MEMBRANE_LAB_API_SERVER_PORT is not accepted: lab.apiserverPort is MEMBRANE_LAB_APISERVER_PORT. */
export function envName(key: string): string {
  return 'MEMBRANE_' + key.replace(/\./g, '_').replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

export function configKeys(): string[] {
  return Object.keys(KEYS);
}

function validate(key: string, kind: Kind, value: unknown, source: string): string | number {
  const fail = (detail: string): never => {
    throw new ConfigError(key, source, detail);
  };
  switch (kind) {
    case 'port': {
      const n = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value;
      if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 65535) fail(`${JSON.stringify(value)} is not a TCP port (1-65535)`);
      return n as number;
    }
    case 'seconds': {
      const n = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value;
      if (typeof n !== 'number' || !Number.isInteger(n) || n < 1) fail(`${JSON.stringify(value)} is not a whole number of seconds (>= 1)`);
      return n as number;
    }
    case 'cidr': {
      if (typeof value !== 'string' || !isIPv4Cidr(value)) fail(`${JSON.stringify(value)} is not an IPv4 CIDR such as 10.244.0.0/16`);
      return value as string;
    }
    case 'hostport': {
      if (typeof value !== 'string' || !/^[^:\s]+:\d{1,5}$/.test(value) || Number(value.split(':')[1]) > 65535) {
        fail(`${JSON.stringify(value)} is not host:port, e.g. 127.0.0.1:9962`);
      }
      return value as string;
    }
    case 'loglevel': {
      if (typeof value !== 'string' || !isLogLevel(value)) fail(`${JSON.stringify(value)} is not one of ${LOG_LEVELS.join(', ')}`);
      return value as string;
    }
    case 'path': {
      if (typeof value !== 'string' || !value.startsWith('/')) fail(`${JSON.stringify(value)} is not an absolute path`);
      return value as string;
    }
    case 'string': {
      if (typeof value !== 'string') fail(`${JSON.stringify(value)} is not a string`);
      return value as string;
    }
    case 'labnode': {
      if (typeof value !== 'string' || !(LAB_NODE_MODES as readonly string[]).includes(value)) fail(`${JSON.stringify(value)} is not one of ${LAB_NODE_MODES.join(', ')}`);
      return value as string;
    }
  }
}

export function isIPv4Cidr(value: string): boolean {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(value);
  if (!m) return false;
  const octets = m.slice(1, 5).map(Number);
  const bits = Number(m[5]);
  return octets.every((o) => o <= 255) && bits <= 32;
}

function flatten(obj: unknown, prefix: string, source: string, out: Map<string, unknown>): void {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new ConfigError(prefix || '(root)', source, 'expected a mapping of keys to values');
  }
  for (const [k, v] of Object.entries(obj as Record<string, unknown>)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v !== null && typeof v === 'object' && !Array.isArray(v) && !(key in KEYS)) flatten(v, key, source, out);
    else out.set(key, v);
  }
}

function setPath(target: MembraneConfig, key: string, value: string | number): void {
  const parts = key.split('.');
  let node = target as unknown as Record<string, unknown>;
  for (const part of parts.slice(0, -1)) node = node[part] as Record<string, unknown>;
  node[parts[parts.length - 1]!] = value;
}

/** A layer of raw settings from one source, such as a file's parsed contents. */
export interface ConfigLayer {
  source: string;
  values: unknown;
}

/** Pure: applies layers over the defaults; throws ConfigError on the first bad key and returns nothing partial. */
export function resolveConfig(layers: ConfigLayer[], base: MembraneConfig = defaultConfig()): MembraneConfig {
  const result = structuredClone(base);
  const explicit = new Set<string>();
  for (const layer of layers) {
    const flat = new Map<string, unknown>();
    flatten(layer.values, '', layer.source, flat);
    for (const [key, raw] of flat) {
      const kind = KEYS[key];
      if (kind === undefined) throw new ConfigError(key, layer.source, `unknown key; known keys are ${configKeys().join(', ')}`);
      setPath(result, key, validate(key, kind, raw, layer.source));
      explicit.add(key);
    }
  }
  // The API socket follows the state directory unless it was set on its own.
  if (explicit.has('stateDir') && !explicit.has('apiSocket')) result.apiSocket = join(result.stateDir, 'agent.sock');
  if (result.identity.refreshSeconds * 3 > result.identity.gcGraceSeconds) {
    throw new ConfigError(
      'identity.refreshSeconds',
      'the configuration',
      `${result.identity.refreshSeconds} must be at most a third of identity.gcGraceSeconds (${result.identity.gcGraceSeconds}), or identities in use could be collected`,
    );
  }
  return result;
}

/** Pure: picks MEMBRANE_* variables that name config keys. */
export function envLayer(env: NodeJS.ProcessEnv): ConfigLayer {
  const values: Record<string, unknown> = {};
  for (const key of configKeys()) {
    const v = env[envName(key)];
    if (v !== undefined && v !== '') {
      const parts = key.split('.');
      let node = values;
      for (const p of parts.slice(0, -1)) node = (node[p] ??= {}) as Record<string, unknown>;
      node[parts[parts.length - 1]!] = v;
    }
  }
  return { source: 'environment', values };
}

export function parseConfigText(text: string, source: string): ConfigLayer {
  let values: unknown;
  try {
    values = parseYaml(text);
  } catch (err) {
    throw new ConfigError('(file)', source, `not valid YAML or JSON: ${(err as Error).message}`);
  }
  return { source, values: values ?? {} };
}

export interface LoadConfigOptions {
  path?: string | undefined;
  env?: NodeJS.ProcessEnv;
  overrides?: Record<string, unknown>;
}

export function loadConfig(options: LoadConfigOptions = {}): MembraneConfig {
  const env = options.env ?? process.env;
  const layers: ConfigLayer[] = [];
  const path = options.path ?? env['MEMBRANE_CONFIG'];
  if (path) {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new ConfigError('(file)', path, `cannot read the config file: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    layers.push(parseConfigText(text, path));
  }
  layers.push(envLayer(env));
  if (options.overrides) layers.push({ source: 'command line', values: options.overrides });
  return resolveConfig(layers);
}
