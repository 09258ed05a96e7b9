/**
 * Pure parts of the lab's node simulator and `lab probe`: argument parsing with a
 * clear error for every malformed input, the pod server's HTTP-or-echo decision,
 * the scripts' own argument checks, netns naming, and what the simulator
 * decides and writes for a pod.
 */
import test from 'ava';
import type { V1Pod } from '@kubernetes/client-node';
import { parseProbeArgs, parseTarget, ProbeUsageError, type RawProbeArgs } from '../../ts/lab/probe.js';
import { classifyFirstBytes, parsePodServerSpec } from '../../ts/lab/sim/pod-server.js';
import { bindingFor, cniArgs, pendingStatus, podAction, podIPFromResult, podPorts, runningStatus, sandboxId } from '../../ts/lab/sim/pods.js';
import { outcomeOfError, parseProbeRequest } from '../../ts/lab/sim/probe-client.js';
import { simNetnsName } from '../../ts/lab/sim/scripts.js';

const base: RawProbeArgs = { from: 'default/client', to: 'default/server', port: '8080' };

test('probe arguments: pods, services and addresses', (t) => {
  t.deepEqual(parseProbeArgs(base), { from: { namespace: 'default', name: 'client' }, to: { kind: 'pod', namespace: 'default', name: 'server' }, port: 8080, protocol: 'tcp', timeoutMs: 3000 });
  t.deepEqual(parseTarget('svc/shop/web'), { kind: 'service', namespace: 'shop', name: 'web' });
  t.deepEqual(parseTarget('service/shop/web'), { kind: 'service', namespace: 'shop', name: 'web' });
  t.deepEqual(parseTarget('10.244.0.7'), { kind: 'ip', ip: '10.244.0.7' });
  t.like(parseProbeArgs({ ...base, protocol: 'UDP', timeout: '250' }), { protocol: 'udp', timeoutMs: 250 });
  t.like(parseProbeArgs({ ...base, protocol: 'sctp' }), { protocol: 'sctp' });
  t.deepEqual(parseProbeArgs({ ...base, http: ['get', '/api/v1?x=1'], header: ['X-User: alice', 'accept:application/json'] }).http, {
    method: 'GET',
    path: '/api/v1?x=1',
    headers: { 'x-user': 'alice', accept: 'application/json' },
  });
});

test('malformed probe arguments get usage errors that say what is wrong', (t) => {
  const bad: [Partial<RawProbeArgs>, RegExp][] = [
    [{ from: 'client' }, /the source pod "client" is not namespace\/name/],
    [{ from: 'default/' }, /is not namespace\/name/],
    [{ from: 'a/b/c' }, /is not namespace\/name/],
    [{ from: 'Default/client' }, /"Default" is not a namespace name/],
    [{ to: 'server' }, /the destination pod "server" is not namespace\/name/],
    [{ to: 'default/Server_1' }, /"Server_1" is not a pod or service name/],
    [{ to: 'svc/web' }, /the service "web" is not namespace\/name/],
    [{ to: '10.0.0.1:80' }, /not an IPv4 address; give the port with --port/],
    [{ to: '10.0.0.300' }, /not an IPv4 address/],
    [{ port: undefined }, /--port is required/],
    [{ port: '0' }, /--port 0 is not a port number/],
    [{ port: '65536' }, /--port 65536 is not a port number/],
    [{ port: 'http' }, /--port http is not a port number/],
    [{ protocol: 'icmp' }, /--protocol icmp is not one of tcp, udp, sctp/],
    [{ timeout: '-5' }, /--timeout -5 is not a number of milliseconds/],
    [{ timeout: '1.5' }, /--timeout 1.5 is not a number of milliseconds/],
    [{ timeout: '0' }, /--timeout 0/],
    [{ http: ['GET'] }, /--http takes a method and a path/],
    [{ http: ['GET', '/a', '/b'] }, /--http takes a method and a path/],
    [{ http: ['GE T', '/'] }, /is not an HTTP method/],
    [{ http: ['GET', 'api'] }, /the path must start with \//],
    [{ http: ['GET', '/a b'] }, /the path must start with \/ and hold no spaces/],
    [{ http: ['GET', '/'], protocol: 'udp' }, /--http needs --protocol tcp/],
    [{ header: ['x:y'] }, /-H\/--header needs --http/],
    [{ http: ['GET', '/'], header: ['novalue'] }, /-H "novalue" is not name:value/],
    [{ http: ['GET', '/'], header: [': v'] }, /is not name:value/],
  ];
  for (const [change, message] of bad) {
    const err = t.throws(() => parseProbeArgs({ ...base, ...change } as RawProbeArgs), { instanceOf: ProbeUsageError }, JSON.stringify(change));
    t.regex(err?.message ?? '', message, JSON.stringify(change));
  }
});

test('the pod server tells an HTTP request from an echo client by its first line', (t) => {
  const c = (s: string) => classifyFirstBytes(Buffer.from(s, 'latin1'));
  t.is(c('GET / HTTP/1.1\r\n'), 'http');
  t.is(c('POST /api/orders?x=1 HTTP/1.0\n'), 'http');
  t.is(c('M-SEARCH * HTTP/1.1\r\n'), 'http');
  // Still undecided: could become a request line.
  t.is(c('GET'), undefined);
  t.is(c('GET /pa'), undefined);
  t.is(c('GET /path HTTP/1.'), undefined);
  // Echo clients.
  t.is(c('membrane-probe 12-34\n'), 'echo');
  t.is(c('hello'), 'echo');
  t.is(c('GET /path FTP'), 'echo');
  t.is(c('get / HTTP/1.1\r\n'), 'echo');
  t.is(c('GET / HTTP/2\r\n'), 'echo');
  t.is(c('\x00\x01binary'), 'echo');
  t.is(c('A'.repeat(9000)), 'echo');
});

test('the pod server and probe client refuse malformed arguments', (t) => {
  t.deepEqual(parsePodServerSpec('{"namespace":"a","name":"b","ports":[80,80,53]}'), { namespace: 'a', name: 'b', ports: [80, 53] });
  t.throws(() => parsePodServerSpec('nope'), { message: /not JSON/ });
  t.throws(() => parsePodServerSpec('{"namespace":"a","ports":[]}'), { message: /must be \{"namespace"/ });
  t.throws(() => parsePodServerSpec('{"namespace":"a","name":"b","ports":[0]}'), { message: /0 is not a port/ });
  t.deepEqual(parseProbeRequest('{"ip":"10.0.0.1","port":80,"protocol":"tcp","timeoutMs":100}'), { ip: '10.0.0.1', port: 80, protocol: 'tcp', timeoutMs: 100 });
  t.throws(() => parseProbeRequest('{"ip":"x","port":80,"protocol":"tcp","timeoutMs":100}'), { message: /not an IPv4 address/ });
  t.throws(() => parseProbeRequest('{"ip":"10.0.0.1","port":80,"protocol":"sctp","timeoutMs":100}'), { message: /not tcp or udp/ });
  t.throws(() => parseProbeRequest('{"ip":"10.0.0.1","port":80,"protocol":"tcp","timeoutMs":0}'), { message: /timeoutMs/ });
  t.throws(() => parseProbeRequest('{"ip":"10.0.0.1","port":80,"protocol":"tcp","timeoutMs":5,"http":{"method":"GET"}}'), { message: /http must be/ });
});

test('socket errors map to probe outcomes', (t) => {
  t.is(outcomeOfError('ECONNREFUSED'), 'refused');
  t.is(outcomeOfError('ETIMEDOUT'), 'timed-out');
  t.is(outcomeOfError('EHOSTUNREACH'), 'unreachable');
  t.is(outcomeOfError('ENETUNREACH'), 'unreachable');
  t.is(outcomeOfError('ECONNRESET'), 'reset');
  t.is(outcomeOfError('EACCES'), 'error');
  t.is(outcomeOfError(undefined), 'error');
});

test('simulated pods live in netns mbr-sim-<uid>; anything but a UUID is refused', (t) => {
  t.is(simNetnsName('0f8e6a4c-1b2d-4c3e-9f00-aabbccddeeff'), 'mbr-sim-0f8e6a4c-1b2d-4c3e-9f00-aabbccddeeff');
  t.throws(() => simNetnsName('../../etc'), { message: /not a UUID/ });
  t.throws(() => simNetnsName(''), { message: /not a UUID/ });
});

const UID = '0f8e6a4c-1b2d-4c3e-9f00-aabbccddeeff';
const pod = (over: Partial<V1Pod['spec']> = {}, meta: Partial<V1Pod['metadata']> = {}, status: V1Pod['status'] = {}): V1Pod => ({
  metadata: { name: 'web-0', namespace: 'shop', uid: UID, ...meta },
  spec: {
    containers: [
      { name: 'app', image: 'x', ports: [{ containerPort: 8080 }, { containerPort: 53, protocol: 'UDP' }, { containerPort: 8080, protocol: 'UDP' }] },
      { name: 'side', image: 'y', ports: [{ containerPort: 9090 }] },
    ],
    ...over,
  },
  status,
});

test('what the simulator does with a pod', (t) => {
  t.is(podAction(pod(), 'n1'), 'bind');
  t.is(podAction(pod({}, { deletionTimestamp: new Date() }), 'n1'), 'ignore', 'an unscheduled pod being deleted needs nothing');
  t.is(podAction(pod({ nodeName: 'n1' }), 'n1'), 'realize');
  t.is(podAction(pod({ nodeName: 'n2' }), 'n1'), 'ignore');
  t.is(podAction(pod({ nodeName: 'n1' }, { deletionTimestamp: new Date() }), 'n1'), 'finalize');
  t.is(podAction(pod({ nodeName: 'n1' }, {}, { phase: 'Succeeded' }), 'n1'), 'finalize');
});

test('ports, sandbox id, CNI_ARGS and the Binding come from the pod', (t) => {
  t.deepEqual(podPorts(pod()), [8080, 53, 9090]);
  t.deepEqual(podPorts(pod({ containers: [{ name: 'a' }] })), []);
  t.is(sandboxId(UID), '0f8e6a4c1b2d4c3e9f00aabbccddeeff');
  t.deepEqual(cniArgs(pod()), { IgnoreUnknown: '1', K8S_POD_NAMESPACE: 'shop', K8S_POD_NAME: 'web-0', K8S_POD_INFRA_CONTAINER_ID: '0f8e6a4c1b2d4c3e9f00aabbccddeeff', K8S_POD_UID: UID });
  t.deepEqual(bindingFor(pod(), 'n1'), { apiVersion: 'v1', kind: 'Binding', metadata: { name: 'web-0', namespace: 'shop', uid: UID }, target: { apiVersion: 'v1', kind: 'Node', name: 'n1' } });
});

test('the pod IP is the first IPv4 of the ADD result; a result without one is an error', (t) => {
  t.is(podIPFromResult({ cniVersion: '1.1.0', interfaces: [], ips: [{ address: 'fd00::5/128' }, { address: '10.244.0.7/32', gateway: '169.254.1.1' }] }), '10.244.0.7');
  t.throws(() => podIPFromResult({ cniVersion: '1.1.0', interfaces: [], ips: [] }), { message: /has no IPv4 address/ });
});

test('the status of a running pod: phase, IPs, conditions and containers, keeping earlier times', (t) => {
  const now = new Date('2026-01-02T03:04:05Z');
  const s = runningStatus(pod({ nodeName: 'n1' }), '10.244.0.7', '127.0.0.1', now);
  t.like(s, { phase: 'Running', podIP: '10.244.0.7', podIPs: [{ ip: '10.244.0.7' }], hostIP: '127.0.0.1', startTime: '2026-01-02T03:04:05.000Z' as unknown as Date });
  t.deepEqual(s.conditions?.map((c) => [c.type, c.status]).sort(), [['ContainersReady', 'True'], ['Initialized', 'True'], ['PodReadyToStartContainers', 'True'], ['PodScheduled', 'True'], ['Ready', 'True']]);
  t.deepEqual(s.containerStatuses?.map((c) => [c.name, c.ready, c.started]), [['app', true, true], ['side', true, true]]);
  const earlier = '2025-12-31T00:00:00.000Z' as unknown as Date;
  const again = runningStatus(pod({ nodeName: 'n1' }, {}, { startTime: earlier, conditions: [{ type: 'Ready', status: 'True', lastTransitionTime: earlier }] }), '10.244.0.7', '127.0.0.1', now);
  t.is(again.startTime, earlier);
  t.is(again.conditions?.find((c) => c.type === 'Ready')?.lastTransitionTime, earlier);
  const pending = pendingStatus(pod({ nodeName: 'n1' }), 'NetworkNotReady', 'CNI ADD failed: code 11', now);
  t.is(pending.phase, 'Pending');
  t.like(pending.conditions?.find((c) => c.type === 'Ready'), { status: 'False', reason: 'NetworkNotReady', message: 'CNI ADD failed: code 11' });
});
