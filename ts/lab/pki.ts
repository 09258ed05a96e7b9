/**
 * The lab's PKI, made with the openssl CLI (node:crypto makes keys but cannot
 * sign X.509 certificates). All keys are ECDSA P-256: quick to make, accepted by
 * etcd, Kubernetes' serving and client certificates, and service-account tokens
 * (ES256).
 *
 * Separate CAs, so that a Kubernetes client certificate cannot open etcd:
 *   etcd-ca     etcd's serving/peer cert, and the apiserver's client cert for etcd
 *   ca          the apiserver's serving cert, the admin and controller-manager
 *               client certs, the controller-manager's serving cert; also the
 *               controller-manager's CSR signer
 * and a third for the aggregation layer (front-proxy-ca, front-proxy-client), which
 * delegated authentication (the controller-manager's own port) expects to find,
 * plus the service-account signing key pair (sa.key / sa.pub).
 *
 * A new PKI is made on every `lab up` (the etcd data is new too); nothing is
 * reused across labs.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface CertPaths {
  cert: string;
  key: string;
}

export interface LabPki {
  dir: string;
  ca: CertPaths;
  etcdCa: CertPaths;
  etcdServer: CertPaths;
  apiserver: CertPaths;
  apiserverEtcdClient: CertPaths;
  admin: CertPaths;
  controllerManager: CertPaths;
  controllerManagerServing: CertPaths;
  frontProxyCa: CertPaths;
  frontProxyClient: CertPaths;
  serviceAccountKey: string;
  serviceAccountPub: string;
}

export class PkiError extends Error {
  override name = 'PkiError';
}

export interface PkiOptions {
  dir: string;
  /** First address of the service range: the `kubernetes` Service's ClusterIP. */
  kubernetesServiceIP: string;
  nodeName: string;
  days?: number;
}

function openssl(args: string[], input?: string): string {
  const r = spawnSync('openssl', args, { encoding: 'utf8', input, timeout: 30_000 });
  if (r.error) {
    const code = (r.error as NodeJS.ErrnoException).code;
    throw new PkiError(code === 'ENOENT' ? 'the openssl command is needed to make the lab PKI; install it (apt-get install openssl)' : `openssl: ${r.error.message}`);
  }
  if (r.status !== 0) throw new PkiError(`openssl ${args[0]} failed: ${r.stderr.trim()}`);
  return r.stdout;
}

function newKey(path: string): void {
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', path]);
  chmodSync(path, 0o600);
}

/** A config file just big enough for `openssl req`, so the system openssl.cnf never matters. */
function reqConfig(dir: string, extensions: string): string {
  const path = join(dir, `.openssl-${randomBytes(4).toString('hex')}.cnf`);
  writeFileSync(path, `[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n[ext]\n${extensions}\n`);
  return path;
}

function subjectArg(subject: { cn: string; o?: string }): string {
  const esc = (s: string) => s.replace(/[/\\]/g, (c) => '\\' + c);
  return (subject.o ? `/O=${esc(subject.o)}` : '') + `/CN=${esc(subject.cn)}`;
}

function serial(): string {
  // Positive 127-bit serial.
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f;
  return '0x' + b.toString('hex');
}

function makeCa(dir: string, name: string, cn: string, days: number): CertPaths {
  const paths = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  newKey(paths.key);
  const cnf = reqConfig(dir, 'basicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign, digitalSignature\nsubjectKeyIdentifier = hash');
  try {
    openssl(['req', '-x509', '-new', '-config', cnf, '-extensions', 'ext', '-key', paths.key, '-subj', subjectArg({ cn }), '-days', String(days), '-sha256', '-set_serial', serial(), '-out', paths.cert]);
  } finally {
    rmSync(cnf, { force: true });
  }
  return paths;
}

interface LeafSpec {
  name: string;
  cn: string;
  o?: string;
  usage: ('server' | 'client')[];
  dns?: string[];
  ips?: string[];
}

function makeLeaf(dir: string, ca: CertPaths, spec: LeafSpec, days: number): CertPaths {
  const paths = { cert: join(dir, `${spec.name}.crt`), key: join(dir, `${spec.name}.key`) };
  newKey(paths.key);
  const eku = spec.usage.map((u) => (u === 'server' ? 'serverAuth' : 'clientAuth')).join(', ');
  const sans = [...(spec.dns ?? []).map((d) => `DNS:${d}`), ...(spec.ips ?? []).map((i) => `IP:${i}`)];
  const ext = [
    'basicConstraints = critical, CA:FALSE',
    'keyUsage = critical, digitalSignature',
    `extendedKeyUsage = ${eku}`,
    'authorityKeyIdentifier = keyid',
    ...(sans.length ? [`subjectAltName = ${sans.join(', ')}`] : []),
  ].join('\n');
  const cnf = reqConfig(dir, ext);
  const csr = join(dir, `${spec.name}.csr`);
  try {
    openssl(['req', '-new', '-config', cnf, '-key', paths.key, '-subj', subjectArg(spec), '-out', csr]);
    openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-set_serial', serial(), '-days', String(days), '-sha256', '-extfile', cnf, '-extensions', 'ext', '-out', paths.cert]);
  } finally {
    rmSync(cnf, { force: true });
    rmSync(csr, { force: true });
  }
  return paths;
}

export function createPki(opts: PkiOptions): LabPki {
  const { dir } = opts;
  const days = opts.days ?? 365;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const loopback = { dns: ['localhost'], ips: ['127.0.0.1'] };

  const etcdCa = makeCa(dir, 'etcd-ca', 'membrane-lab-etcd-ca', days);
  const ca = makeCa(dir, 'ca', 'membrane-lab-ca', days);

  const etcdServer = makeLeaf(dir, etcdCa, { name: 'etcd-server', cn: 'membrane-lab-etcd', usage: ['server', 'client'], ...loopback }, days);
  const apiserverEtcdClient = makeLeaf(dir, etcdCa, { name: 'apiserver-etcd-client', cn: 'kube-apiserver-etcd-client', usage: ['client'] }, days);

  const apiserver = makeLeaf(
    dir,
    ca,
    {
      name: 'apiserver',
      cn: 'kube-apiserver',
      usage: ['server'],
      dns: ['localhost', 'kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local', opts.nodeName],
      ips: ['127.0.0.1', opts.kubernetesServiceIP],
    },
    days,
  );
  const admin = makeLeaf(dir, ca, { name: 'admin', cn: 'membrane-lab-admin', o: 'system:masters', usage: ['client'] }, days);
  const controllerManager = makeLeaf(dir, ca, { name: 'controller-manager', cn: 'system:kube-controller-manager', usage: ['client'] }, days);
  const controllerManagerServing = makeLeaf(dir, ca, { name: 'controller-manager-serving', cn: 'kube-controller-manager', usage: ['server'], ...loopback }, days);

  const frontProxyCa = makeCa(dir, 'front-proxy-ca', 'membrane-lab-front-proxy-ca', days);
  const frontProxyClient = makeLeaf(dir, frontProxyCa, { name: 'front-proxy-client', cn: 'front-proxy-client', usage: ['client'] }, days);

  const serviceAccountKey = join(dir, 'sa.key');
  const serviceAccountPub = join(dir, 'sa.pub');
  newKey(serviceAccountKey);
  openssl(['pkey', '-in', serviceAccountKey, '-pubout', '-out', serviceAccountPub]);

  return { dir, ca, etcdCa, etcdServer, apiserver, apiserverEtcdClient, admin, controllerManager, controllerManagerServing, frontProxyCa, frontProxyClient, serviceAccountKey, serviceAccountPub };
}

/** Reads a PEM file as base64 of its bytes, as kubeconfig *-data fields want. */
export function pemData(path: string): string {
  return readFileSync(path).toString('base64');
}
