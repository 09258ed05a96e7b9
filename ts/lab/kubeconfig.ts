/** Kubeconfig files of the lab: self-contained (certificates embedded). */
import { writeFileSync } from 'node:fs';
import { stringify } from 'yaml';
import { pemData, type CertPaths } from './pki.js';

export interface KubeconfigSpec {
  server: string;
  caFile: string;
  client: CertPaths;
  user: string;
  cluster?: string;
}

export function renderKubeconfig(spec: KubeconfigSpec): string {
  const cluster = spec.cluster ?? 'membrane-lab';
  const context = `${spec.user}@${cluster}`;
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: cluster, cluster: { server: spec.server, 'certificate-authority-data': pemData(spec.caFile) } }],
    users: [{ name: spec.user, user: { 'client-certificate-data': pemData(spec.client.cert), 'client-key-data': pemData(spec.client.key) } }],
    contexts: [{ name: context, context: { cluster, user: spec.user } }],
    'current-context': context,
    preferences: {},
  });
}

export function writeKubeconfig(path: string, spec: KubeconfigSpec): void {
  writeFileSync(path, renderKubeconfig(spec), { mode: 0o600 });
}
