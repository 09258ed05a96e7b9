/**
 * Where the lab finds the files it ships with: the Go module that pins the
 * control-plane versions and the CRDs under deploy/. Found by walking up from
 * this module, so it works from ts/ (tsx) and from dist/ (compiled) alike.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

export function repoRoot(): string {
  if (cached) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'ts', 'lab', 'components', 'go.mod'))) return (cached = dir);
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`cannot find the Membrane source tree (ts/lab/components/go.mod) above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

/** The Go module whose go.mod and go.sum pin etcd and Kubernetes. */
export function componentsDir(): string {
  return join(repoRoot(), 'ts', 'lab', 'components');
}

export function crdsDir(): string {
  return join(repoRoot(), 'deploy', 'crds');
}

/** The Helm chart (deploy/helm/membrane). */
export function helmChartDir(): string {
  return join(repoRoot(), 'deploy', 'helm', 'membrane');
}

/** The plain manifests (deploy/*.yaml), applied after the CRDs. */
export function deployDir(): string {
  return join(repoRoot(), 'deploy');
}
