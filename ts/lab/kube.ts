/**
 * Kubernetes clients for the lab, for tests and the agent:
 *
 *   const kc = labKubeConfig(loadConfig().lab);
 *   const core = kc.makeApiClient(CoreV1Api);
 *
 * The kubeconfig is the admin one `lab up` writes to <lab.dir>/kubeconfig.
 */
import { existsSync } from 'node:fs';
import { KubeConfig } from '@kubernetes/client-node';
import type { LabConfig } from '../config/config.js';
import { labLayout } from './layout.js';

export class LabNotUpError extends Error {
  override name = 'LabNotUpError';
}

export function labKubeconfigPath(lab: Pick<LabConfig, 'dir'>): string {
  return labLayout(lab.dir).kubeconfig;
}

export function kubeConfigFromFile(path: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  return kc;
}

export function labKubeConfig(lab: Pick<LabConfig, 'dir'>): KubeConfig {
  const path = labKubeconfigPath(lab);
  if (!existsSync(path)) throw new LabNotUpError(`no lab kubeconfig at ${path}: the lab in ${lab.dir} is not up; run membrane lab up`);
  return kubeConfigFromFile(path);
}
