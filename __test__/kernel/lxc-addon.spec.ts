/**
 * The endpoint datapath (bpf_lxc) through the addon on a real kernel: two "pods"
 * (network namespaces wired through host veths) become enforcing endpoints; with no
 * policy their pings are dropped (default deny), with ICMP echo allowed between their
 * identities they pass; a second open adopts what the first loaded; detach and purge
 * leave no attachment or pin behind.
 *
 * Needs root and BPF. Without them these tests fail with an explanation; they never
 * skip or pass vacuously.
 */
import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { isDatapathError } from '../../ts/datapath/addon.js';
import { POLICY_ALLOW, TRAFFIC_EGRESS, TRAFFIC_INGRESS, type PolicyKey } from '../../ts/datapath/codecs.js';
import {
  attachEndpoint,
  detachEndpoint,
  EP_F_EGRESS_ENFORCED,
  EP_F_INGRESS_ENFORCED,
  listEndpointAttachments,
  openDatapath,
  purgeDatapath,
  type EndpointSpec,
} from '../../ts/datapath/lxc.js';
import { endpointsByIfindex, ipcacheMap, policyMap } from '../../ts/datapath/maps.js';
import { createTwoPods, ping, run, type Pod } from './helpers/netns.js';

const ICMP = 1;
const ICMP_ECHO_REQUEST = 8;

function requireKernel(): void {
  if (process.platform !== 'linux') throw new Error('kernel tests need Linux');
  if (process.getuid?.() !== 0) {
    throw new Error('kernel tests need root (BPF, network namespaces, bpffs); run `sudo npx ava __test__/kernel/`');
  }
  for (const tool of ['ip', 'ping']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new Error(`kernel tests need \`${tool}\` (iproute2, iputils-ping)`);
  }
}

let seq = 0;
/** A pin directory of this process, purged (and removed) after the test. */
function pinDirFor(t: ExecutionContext): string {
  requireKernel();
  const pinDir = `/sys/fs/bpf/membrane-test-lxc-${process.pid}${seq++ === 0 ? '' : `-${seq}`}`;
  t.teardown(async () => {
    try {
      await purgeDatapath({ pinDir });
    } catch (err) {
      t.log(`teardown purge of ${pinDir} failed: ${String(err)}`);
    }
    // Last resort: unlinking pins releases links, programs and maps.
    rmSync(pinDir, { recursive: true, force: true });
  });
  return pinDir;
}

function ifindexOf(iface: string): number {
  return Number(readFileSync(`/sys/class/net/${iface}/ifindex`, 'utf8').trim());
}

function endpointOf(pod: Pod, identity: number, epId: number): EndpointSpec {
  return {
    ifindex: ifindexOf(pod.hostIface),
    identity,
    ipv4: pod.ip,
    epId,
    flags: EP_F_INGRESS_ENFORCED | EP_F_EGRESS_ENFORCED,
    mac: run('ip', ['netns', 'exec', pod.netns, 'cat', '/sys/class/net/eth0/address']).trim(),
    nodeMac: readFileSync(`/sys/class/net/${pod.hostIface}/address`, 'utf8').trim(),
  };
}

function pingFails(from: Pod, to: Pod): boolean {
  try {
    ping(from, to, 1);
    return false;
  } catch {
    return true;
  }
}

test.serial('bad endpoint input is rejected naming the field', async (t) => {
  const pinDir = pinDirFor(t);
  const endpoint: EndpointSpec = {
    ifindex: 1,
    identity: 1000,
    ipv4: '10.0.0.1',
    epId: 1,
    flags: 0,
    mac: '02:00:00:00:00:01',
    nodeMac: '02:00:00:00:00:02',
  };
  const cases: Array<[Partial<EndpointSpec>, string]> = [
    [{ mac: '02:00:00:00:00' }, 'endpoint.mac'],
    [{ nodeMac: 'zz:00:00:00:00:02' }, 'endpoint.nodeMac'],
    [{ ipv4: '10.0.0.256' }, 'endpoint.ipv4'],
    [{ epId: 0 }, 'endpoint.epId'],
    [{ epId: 70000 }, 'endpoint.epId'],
    [{ flags: 0x100 }, 'endpoint'],
  ];
  for (const [change, field] of cases) {
    const err = await t.throwsAsync(attachEndpoint({ pinDir, iface: 'lo', endpoint: { ...endpoint, ...change } }));
    t.true(isDatapathError(err, 'EINVAL'), `${JSON.stringify(change)}: ${String(err)}`);
    t.is((err as { object?: string }).object, field, JSON.stringify(change));
    t.true(err?.message.includes(field), err?.message);
  }
  const mode = await t.throwsAsync(openDatapath({ pinDir, mode: 'bogus' as 'auto' }));
  t.true(isDatapathError(mode, 'EINVAL'), String(mode));
  // Nothing was loaded or pinned by the rejected calls.
  t.false(existsSync(`${pinDir}/progs`));
});

test.serial('endpoints are default-deny until policy allows ICMP; open adopts; detach and purge clean up', async (t) => {
  const pinDir = pinDirFor(t);
  const pods = createTwoPods('l');
  t.teardown(() => pods.destroy());
  // Registered after the pods: runs before their removal (teardowns run last-in first-out).
  t.teardown(async () => {
    await purgeDatapath({ pinDir }).catch((err: unknown) => t.log(`purge failed: ${String(err)}`));
  });
  const { a, b } = pods;

  // Without the datapath the pods reach each other.
  ping(a, b, 1);

  const opened = await openDatapath({ pinDir, sizes: { ctTcp: 4096, ctAny: 4096, policy: 1024 } });
  t.is(opened.outcome, 'loaded');
  t.regex(opened.buildId, /^[0-9a-f]{16}$/);
  const sizes = new Map(opened.maps.map((m) => [m.name, m.maxEntries]));
  t.is(sizes.get('mbr_ct_tcp'), 4096);
  t.is(sizes.get('mbr_policy'), 1024);
  t.is(sizes.get('mbr_policy_exact'), 1024, 'the policy size applies to both policy maps');
  t.true(sizes.has('mbr_ipcache') && sizes.has('mbr_ep_ifindex'), [...sizes.keys()].join(','));

  const idA = 10_001;
  const idB = 10_002;
  const epA = endpointOf(a, idA, 1);
  const epB = endpointOf(b, idB, 2);
  await ipcacheMap(pinDir).update([
    [{ prefixLen: 32, addr: a.ip }, { identity: idA }],
    [{ prefixLen: 32, addr: b.ip }, { identity: idB }],
  ]);

  // Enforcing endpoints, no policy: everything is dropped.
  for (const [pod, ep] of [[a, epA], [b, epB]] as const) {
    const attached = await attachEndpoint({ pinDir, iface: pod.hostIface, endpoint: ep });
    t.deepEqual(attached.map((x) => x.direction).sort(), ['egress', 'ingress']);
    t.true(attached.every((x) => x.created && x.ifindex === ep.ifindex && x.pinPath.startsWith(pinDir)), JSON.stringify(attached));
    t.deepEqual(attached.map((x) => x.program).sort(), ['mbr_from_cont', 'mbr_to_cont']);
    // Idempotent: a second attach finds the same attachments.
    const again = await attachEndpoint({ pinDir, iface: pod.hostIface, endpoint: ep });
    t.true(again.every((x) => !x.created), JSON.stringify(again));
  }
  const [entryA] = await endpointsByIfindex(pinDir).lookup([epA.ifindex]);
  t.is(entryA?.identity, idA);
  t.is(entryA?.epId, 1);

  const listed = await listEndpointAttachments({ pinDir });
  t.deepEqual(listed.map((e) => e.ifindex).sort((x, y) => x - y), [epA.ifindex, epB.ifindex].sort((x, y) => x - y));
  for (const e of listed) {
    const ep = e.ifindex === epA.ifindex ? epA : epB;
    t.is(e.iface, e.ifindex === epA.ifindex ? a.hostIface : b.hostIface);
    t.deepEqual(e.endpoint, ep);
    t.is(e.attachments.length, 2);
  }

  t.true(pingFails(a, b), 'a -> b passed without policy');
  t.true(pingFails(b, a), 'b -> a passed without policy');

  // Allow ICMP echo requests between the two identities, both ways: egress at the
  // sender, ingress at the receiver. Replies are conntrack replies and need no rule.
  const echo = (epId: number, direction: number, identity: number): PolicyKey => ({
    prefixLen: 96,
    epId,
    direction,
    identity,
    proto: ICMP,
    dport: ICMP_ECHO_REQUEST,
  });
  const written = await policyMap(pinDir).update([
    [echo(1, TRAFFIC_EGRESS, idB), { action: POLICY_ALLOW, cookie: 1 }],
    [echo(2, TRAFFIC_INGRESS, idA), { action: POLICY_ALLOW, cookie: 2 }],
    [echo(2, TRAFFIC_EGRESS, idA), { action: POLICY_ALLOW, cookie: 3 }],
    [echo(1, TRAFFIC_INGRESS, idB), { action: POLICY_ALLOW, cookie: 4 }],
  ]);
  t.is(written.written, 4);
  ping(a, b, 3);
  ping(b, a, 3);

  // A later start adopts: nothing reloaded, attachments untouched, traffic goes on.
  const adopted = await openDatapath({ pinDir });
  t.is(adopted.outcome, 'adopted');
  t.is(adopted.buildId, opened.buildId);
  t.is((await listEndpointAttachments({ pinDir })).length, 2);
  ping(a, b, 1);

  // Detach both: links first, entries after.
  for (const ep of [epA, epB]) {
    const report = await detachEndpoint({ pinDir, ifindex: ep.ifindex });
    t.true(report.endpointRemoved);
    t.deepEqual(report.detached.map((x) => x.direction).sort(), ['egress', 'ingress']);
    const again = await detachEndpoint({ pinDir, ifindex: ep.ifindex });
    t.false(again.endpointRemoved);
    t.is(again.detached.length, 0);
  }
  t.deepEqual(await listEndpointAttachments({ pinDir }), []);
  t.deepEqual(await endpointsByIfindex(pinDir).lookup([epA.ifindex, epB.ifindex]), [undefined, undefined]);
  // No program of ours is left on the pods' hooks.
  for (const pod of [a, b]) {
    const hooks = run('bpftool', ['net', 'show', 'dev', pod.hostIface]);
    t.false(hooks.includes('mbr_'), hooks);
  }

  const purged = await purgeDatapath({ pinDir });
  t.true(purged.removed.length > 0);
  t.false(existsSync(pinDir), `${pinDir} left behind`);
});
