/**
 * What lives where in lab.dir. Everything but logs/ is runtime state that
 * `lab down` removes; logs/ is kept so a failure can still be read afterwards
 * (`lab down --purge` removes it too).
 */
import { join } from 'node:path';

export const COMPONENTS = ['etcd', 'kube-apiserver', 'kube-controller-manager'] as const;
export type ComponentName = (typeof COMPONENTS)[number];

export interface LabLayout {
  dir: string;
  state: string;
  lock: string;
  /** Admin kubeconfig (system:masters). */
  kubeconfig: string;
  pki: string;
  etcdData: string;
  run: string;
  logs: string;
  controllerManagerKubeconfig: string;
  log: (c: ComponentName) => string;
  pidFile: (c: ComponentName) => string;
}

export function labLayout(dir: string): LabLayout {
  return {
    dir,
    state: join(dir, 'state.json'),
    lock: join(dir, 'lock'),
    kubeconfig: join(dir, 'kubeconfig'),
    pki: join(dir, 'pki'),
    etcdData: join(dir, 'etcd'),
    run: join(dir, 'run'),
    logs: join(dir, 'logs'),
    controllerManagerKubeconfig: join(dir, 'pki', 'controller-manager.kubeconfig'),
    log: (c) => join(dir, 'logs', `${c}.log`),
    pidFile: (c) => join(dir, 'run', `${c}.pid`),
  };
}

/** Entries of lab.dir that `lab down` keeps unless --purge. */
export const KEPT_ON_DOWN = new Set(['logs', 'lock']);
