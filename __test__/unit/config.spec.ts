import test from 'ava';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, defaultConfig, envLayer, envName, loadConfig, parseConfigText, resolveConfig } from '../../ts/config/config.js';

test('defaults bind the API socket to the state dir and metrics to loopback', (t) => {
  const c = defaultConfig('/home/x');
  t.is(c.apiSocket, '/var/run/membrane/agent.sock');
  t.true(c.metricsAddress.startsWith('127.0.0.1:'));
  t.is(c.lab.cacheDir, '/home/x/.cache/membrane');
});

test('layers apply in order, later wins, nested keys reach the lab section', (t) => {
  const c = resolveConfig([
    { source: 'file', values: { nodeName: 'a', lab: { apiserverPort: 20000 } } },
    { source: 'environment', values: { nodeName: 'b' } },
  ]);
  t.is(c.nodeName, 'b');
  t.is(c.lab.apiserverPort, 20000);
  t.is(c.lab.etcdClientPort, defaultConfig().lab.etcdClientPort);
});

test('moving the state dir moves the socket unless the socket is set too', (t) => {
  t.is(resolveConfig([{ source: 'f', values: { stateDir: '/run/m' } }]).apiSocket, '/run/m/agent.sock');
  t.is(resolveConfig([{ source: 'f', values: { stateDir: '/run/m', apiSocket: '/s.sock' } }]).apiSocket, '/s.sock');
});

test('environment variable names follow the keys', (t) => {
  t.is(envName('nodeName'), 'MEMBRANE_NODE_NAME');
  t.is(envName('lab.apiserverPort'), 'MEMBRANE_LAB_APISERVER_PORT');
  const layer = envLayer({ MEMBRANE_LAB_APISERVER_PORT: '17000', MEMBRANE_LOG_LEVEL: 'debug', UNRELATED: 'x' });
  const c = resolveConfig([layer]);
  t.is(c.lab.apiserverPort, 17000);
  t.is(c.logLevel, 'debug');
});

const malformed: Array<[string, unknown, RegExp]> = [
  ['unknown key', { nodeNme: 'x' }, /nodeNme.*unknown key/],
  ['port out of range', { lab: { apiserverPort: 70000 } }, /lab\.apiserverPort.*not a TCP port/],
  ['port as words', { lab: { etcdClientPort: 'eighty' } }, /not a TCP port/],
  ['bad CIDR', { lab: { podCIDR: '10.0.0.0/33' } }, /lab\.podCIDR.*not an IPv4 CIDR/],
  ['relative path', { stateDir: 'run/membrane' }, /stateDir.*absolute path/],
  ['bad log level', { logLevel: 'loud' }, /logLevel.*not one of/],
  ['metrics without port', { metricsAddress: '127.0.0.1' }, /metricsAddress.*host:port/],
  ['root is a list', [1, 2], /expected a mapping/],
];
for (const [name, values, message] of malformed) {
  test(`malformed config is rejected with the key named: ${name}`, (t) => {
    const err = t.throws(() => resolveConfig([{ source: 'test.yaml', values }]), { instanceOf: ConfigError });
    t.regex(err!.message, message);
    t.regex(err!.message, /test\.yaml/);
  });
}

test('a file that is not YAML says so and names the file', (t) => {
  const err = t.throws(() => parseConfigText('a: [1, 2', '/etc/membrane/config.yaml'), { instanceOf: ConfigError });
  t.regex(err!.message, /config\.yaml.*not valid YAML/);
});

test('loadConfig reads a YAML file, then env, then overrides', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'membrane-config-'));
  const path = join(dir, 'config.yaml');
  writeFileSync(path, 'nodeName: from-file\nlogLevel: warn\nlab:\n  podCIDR: 10.244.5.0/24\n');
  const c = loadConfig({ path, env: { MEMBRANE_LOG_LEVEL: 'error' }, overrides: { nodeName: 'from-flag' } });
  t.is(c.nodeName, 'from-flag');
  t.is(c.logLevel, 'error');
  t.is(c.lab.podCIDR, '10.244.5.0/24');
});

test('a missing config file is an error, not silently ignored', (t) => {
  const err = t.throws(() => loadConfig({ path: '/nonexistent/membrane.yaml', env: {} }), { instanceOf: ConfigError });
  t.regex(err!.message, /ENOENT/);
});

test('identity settings: seconds are validated and the refresh must stay under a third of the grace', (t) => {
  const c = resolveConfig([{ source: 'f', values: { identity: { gcGraceSeconds: '600', refreshSeconds: 200 } } }]);
  t.is(c.identity.gcGraceSeconds, 600);
  t.throws(() => resolveConfig([{ source: 'f', values: { identity: { gcGraceSeconds: 0 } } }]), { message: /identity\.gcGraceSeconds.*whole number of seconds/ });
  t.throws(() => resolveConfig([{ source: 'f', values: { identity: { gcGraceSeconds: 600, refreshSeconds: 300 } } }]), { message: /at most a third/ });
  t.is(envName('identity.gcGraceSeconds'), 'MEMBRANE_IDENTITY_GC_GRACE_SECONDS');
});
