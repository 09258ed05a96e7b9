/**
 * The runtime side of the CNI protocol (ts/cni/invoke.ts): conflists, the
 * per-plugin configuration, CNI_ARGS, and the plugin's stdout, with malformed
 * input of each. Pure; no root needed. (Lives beside the CNI e2e test, whose
 * helpers build on it.)
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CniInvokeError, cniPluginPath, formatCniArgs, parseConflist, parsePluginOutput, pluginConfig, requirePlugin } from '../../ts/cni/invoke.js';
import { REPO } from './helpers/lab.js';

test('the shipped conflist parses and yields the plugin configuration libcni would send', (t) => {
  const list = parseConflist(readFileSync(join(REPO, 'deploy', 'cni', '10-membrane.conflist'), 'utf8'));
  t.is(list.cniVersion, '1.1.0');
  const conf = pluginConfig(list, 0, { prevResult: { ips: [] } });
  t.deepEqual(conf, { type: 'membrane-cni', mtu: 1500, agentSocket: '/var/run/membrane/agent.sock', name: 'membrane', cniVersion: '1.1.0', prevResult: { ips: [] } });
});

test('malformed conflists are refused with what is wrong', (t) => {
  const cases: Array<[string, RegExp]> = [
    ['{', /not valid JSON/],
    ['[]', /must be a JSON object/],
    ['{"name":"n","plugins":[{"type":"x"}]}', /no cniVersion/],
    ['{"cniVersion":"1.1.0","plugins":[{"type":"x"}]}', /no name/],
    ['{"cniVersion":"1.1.0","name":"n","plugins":[]}', /non-empty plugins/],
    ['{"cniVersion":"1.1.0","name":"n","plugins":[{"mtu":1}]}', /have a type/],
  ];
  for (const [text, why] of cases) t.throws(() => parseConflist(text, 'test.conflist'), { instanceOf: CniInvokeError, message: why }, text);
  t.throws(() => pluginConfig(parseConflist('{"cniVersion":"1.1.0","name":"n","plugins":[{"type":"x"}]}'), 3), { message: /no plugin 3/ });
});

test('CNI_ARGS are KEY=VALUE pairs joined by ;', (t) => {
  t.is(formatCniArgs({ K8S_POD_NAMESPACE: 'default', K8S_POD_NAME: 'web-0' }), 'K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0');
  t.is(formatCniArgs({}), '');
});

test('plugin output: results, spec errors, and answers outside the spec', (t) => {
  const ok = parsePluginOutput(0, '{"cniVersion":"1.1.0","interfaces":[]}\n', '');
  t.deepEqual(ok, { ok: true, exitCode: 0, output: { cniVersion: '1.1.0', interfaces: [] }, stderr: '' });
  t.deepEqual(parsePluginOutput(0, '', 'log'), { ok: true, exitCode: 0, output: undefined, stderr: 'log' });
  const err = parsePluginOutput(1, '{"cniVersion":"1.1.0","code":11,"msg":"agent down","details":"ENOENT"}', '');
  t.deepEqual(err, { ok: false, exitCode: 1, error: { cniVersion: '1.1.0', code: 11, msg: 'agent down', details: 'ENOENT' }, stderr: '' });
  t.throws(() => parsePluginOutput(0, 'not json', ''), { instanceOf: CniInvokeError, message: /not JSON/ });
  t.throws(() => parsePluginOutput(1, '', 'panicked at ...'), { instanceOf: CniInvokeError, message: /exited 1 without a CNI error object.*panicked/ });
  t.throws(() => parsePluginOutput(null, '', ''), { message: /was killed/ });
  t.throws(() => parsePluginOutput(2, '{"code":"11","msg":"x"}', ''), { message: /without a CNI error object/ });
});

test('the plugin is looked for where the build puts it, and a missing one is named', (t) => {
  t.is(cniPluginPath({ MEMBRANE_CNI_BIN: '/opt/cni/bin/membrane-cni' }), '/opt/cni/bin/membrane-cni');
  t.is(cniPluginPath({ CARGO_TARGET_DIR: '/tgt' }), '/tgt/release/membrane-cni');
  t.is(cniPluginPath({ MEMBRANE_CACHE_DIR: '/c' }), '/c/cargo-target/release/membrane-cni');
  t.throws(() => requirePlugin('/nonexistent/membrane-cni'), { message: /not built at \/nonexistent\/membrane-cni: run `npm run build:cni`/ });
});

test('the benchmark reads ADD and DEL phases from the plugin log and ignores other lines', async (t) => {
  const { cniPhases } = await import('../../ts/cni/bench.js');
  const log = [
    '1.000 membrane-cni Add network=n container=c1 ifname=eth0: added 10.0.0.2/32 on mbr0 <-> eth0 in 60.1 ms (address 3.3 ms, wiring 2.5 ms, endpoint 49.5 ms)',
    '1.100 membrane-cni Add network=n container=c2 ifname=eth0: error 11: cannot allocate an address',
    '1.200 membrane-cni Del network=n container=c1 ifname=eth0: agent {"removed":true,"released":true} in 48.5 ms; mbr0 removed (16.6 ms)',
    '1.300 membrane-cni Del network=n container=c3 ifname=eth0: the agent is not reachable on /x (ENOENT), so only the link is removed; mbr1 was already gone (0.1 ms)',
    'garbage (address x ms, wiring 1 ms, endpoint 1 ms)',
  ].join('\n');
  t.deepEqual(cniPhases(log), { address: [3.3], wiring: [2.5], endpoint: [49.5], delAgent: [48.5], delLink: [16.6] });
  t.deepEqual(cniPhases(''), { address: [], wiring: [], endpoint: [], delAgent: [], delLink: [] });
});
