/**
 * Pure parts of the lab: CRD files in sync with their source and structurally
 * sound, prefix arithmetic, version stamping, the build cache key, settings checks.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { buildKey, kubernetesLdflags, pinnedVersions } from '../../ts/lab/build.js';
import { firstHost, parsePrefix, prefixContains, prefixesOverlap } from '../../ts/lab/cidr.js';
import { membraneCrds, type JsonSchema } from '../../ts/lab/crd-defs.js';
import { renderCrdFiles } from '../../ts/lab/gen-crds.js';
import { validateLabSettings } from '../../ts/lab/lab.js';
import { componentsDir, crdsDir } from '../../ts/lab/repo.js';
import { defaultConfig } from '../../ts/config/config.js';

test('deploy/crds matches ts/lab/crd-defs.ts (run node --import=tsx ts/lab/gen-crds.ts)', (t) => {
  for (const [file, text] of renderCrdFiles()) {
    t.is(readFileSync(join(crdsDir(), file), 'utf8'), text, file);
  }
});

/** The rules the apiserver applies to CRD schemas that are easy to break by hand. */
function structuralProblems(s: JsonSchema, path: string, out: string[]): void {
  const intOrString = s['x-kubernetes-int-or-string'] === true;
  const preserve = s['x-kubernetes-preserve-unknown-fields'] === true;
  if (!intOrString && !preserve && s['type'] === undefined) out.push(`${path}: no type`);
  for (const junctor of ['anyOf', 'oneOf', 'allOf']) {
    for (const [i, sub] of ((s[junctor] as JsonSchema[] | undefined) ?? []).entries()) {
      if (sub['type'] !== undefined) out.push(`${path}.${junctor}[${i}]: type inside a junctor`);
    }
  }
  if (s['type'] === 'array' && s['items'] === undefined) out.push(`${path}: array without items`);
  for (const [k, v] of Object.entries((s['properties'] as Record<string, JsonSchema> | undefined) ?? {})) structuralProblems(v, `${path}.${k}`, out);
  if (s['items']) structuralProblems(s['items'] as JsonSchema, `${path}[]`, out);
  const ap = s['additionalProperties'];
  if (ap && typeof ap === 'object') structuralProblems(ap as JsonSchema, `${path}{}`, out);
}

test('CRD schemas are structural', (t) => {
  for (const { file, object } of membraneCrds()) {
    const versions = (object['spec'] as { versions: { schema: { openAPIV3Schema: JsonSchema } }[] }).versions;
    for (const v of versions) {
      const problems: string[] = [];
      structuralProblems(v.schema.openAPIV3Schema, file, problems);
      t.deepEqual(problems, []);
    }
  }
});

test('the policy CRDs are cilium.io/v2 with short names, status subresource and the right scope', (t) => {
  const byName = new Map(membraneCrds().map((c) => [(c.object['metadata'] as { name: string }).name, c.object['spec'] as Record<string, unknown>]));
  const cnp = byName.get('ciliumnetworkpolicies.cilium.io');
  const ccnp = byName.get('ciliumclusterwidenetworkpolicies.cilium.io');
  const mid = byName.get('membraneidentities.membrane.io');
  t.like(cnp, { group: 'cilium.io', scope: 'Namespaced', names: { kind: 'CiliumNetworkPolicy' } });
  t.like(ccnp, { group: 'cilium.io', scope: 'Cluster', names: { kind: 'CiliumClusterwideNetworkPolicy' } });
  t.like(mid, { group: 'membrane.io', scope: 'Cluster', names: { kind: 'MembraneIdentity' } });
  t.true(((cnp?.['names'] as { shortNames: string[] }).shortNames).includes('cnp'));
  t.true(((ccnp?.['names'] as { shortNames: string[] }).shortNames).includes('ccnp'));
  for (const spec of [cnp, ccnp, mid]) {
    const v = (spec?.['versions'] as { name: string; subresources: unknown }[])[0];
    t.deepEqual(v?.subresources, { status: {} });
  }
});

test('prefix arithmetic', (t) => {
  t.deepEqual(parsePrefix('10.96.0.0/16'), { network: 0x0a600000, bits: 16 });
  t.throws(() => parsePrefix('10.96.0.1/16'), { message: /host bits/ });
  t.is(firstHost('10.96.0.0/16'), '10.96.0.1');
  t.is(firstHost('10.234.0.0/16'), '10.234.0.1');
  t.true(prefixContains('10.244.0.0/16', '10.244.3.0/24'));
  t.false(prefixContains('10.244.0.0/16', '10.245.0.0/24'));
  t.false(prefixContains('10.244.0.0/24', '10.244.0.0/16'));
  t.true(prefixesOverlap('10.0.0.0/8', '10.96.0.0/12'));
  t.false(prefixesOverlap('10.244.0.0/16', '10.96.0.0/16'));
});

test('lab settings are checked before anything starts', (t) => {
  const lab = defaultConfig('/root').lab;
  t.notThrows(() => validateLabSettings(lab));
  t.throws(() => validateLabSettings({ ...lab, podCIDR: '10.1.0.0/24' }), { message: /lab.podCIDR 10.1.0.0\/24 is not inside lab.clusterCIDR/ });
  t.throws(() => validateLabSettings({ ...lab, serviceCIDR: '10.244.128.0/20' }), { message: /overlaps/ });
  t.throws(() => validateLabSettings({ ...lab, serviceCIDR: '172.0.0.0/8' }), { message: /too large/ });
});

test('versions come from go.mod and are stamped into the Kubernetes binaries', (t) => {
  const v = pinnedVersions();
  t.regex(v.kubernetes, /^v1\.\d+\.\d+$/);
  t.regex(v.etcd, /^v3\.\d+\.\d+$/);
  const flags = kubernetesLdflags('v1.34.4', '2026-01-02T03:04:05Z');
  t.true(flags.includes('-X k8s.io/component-base/version.gitVersion=v1.34.4'));
  t.true(flags.includes('-X k8s.io/component-base/version.gitMajor=1'));
  t.true(flags.includes('-X k8s.io/component-base/version.gitMinor=34'));
  t.true(flags.includes('-X k8s.io/component-base/version.buildDate=2026-01-02T03:04:05Z'));
  t.deepEqual(pinnedVersions('module x\nrequire (\n\tgo.etcd.io/etcd/server/v3 v3.7.0\n\tk8s.io/kubernetes v1.35.1\n)\n'), { kubernetes: 'v1.35.1', etcd: 'v3.7.0' });
});

test('the build key follows go.mod and go.sum', (t) => {
  const key = buildKey();
  t.regex(key, /^[0-9a-f]{16}$/);
  t.is(buildKey(componentsDir()), key, 'stable');
  const dir = mkdtempSync(join(tmpdir(), 'membrane-key-'));
  try {
    const goMod = readFileSync(join(componentsDir(), 'go.mod'), 'utf8');
    const goSum = readFileSync(join(componentsDir(), 'go.sum'), 'utf8');
    writeFileSync(join(dir, 'go.mod'), goMod);
    writeFileSync(join(dir, 'go.sum'), goSum);
    t.is(buildKey(dir), key);
    writeFileSync(join(dir, 'go.mod'), goMod.replace('k8s.io/kubernetes v1.', 'k8s.io/kubernetes v9.'));
    t.not(buildKey(dir), key, 'a version bump changes the key');
    writeFileSync(join(dir, 'go.mod'), goMod);
    writeFileSync(join(dir, 'go.sum'), goSum + '\n');
    t.not(buildKey(dir), key, 'a go.sum change changes the key');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
