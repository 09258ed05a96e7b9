/**
 * `npm run demo` / `membrane demo`: shows what Membrane does today, on this
 * machine, with real parts. Each capability adds its chapter as it lands.
 *
 *   1. the lab: a real control plane (etcd, kube-apiserver, kube-controller-manager)
 *      built from source, with Membrane's CRDs and a registered Node;
 *   2. the datapath slice: an eBPF program loaded once, attached with tcx to a
 *      pod's host-side veth, counting real pings; the counters are read back
 *      from the pinned map by a separate process;
 *   3. the datapath core: two pods become enforcing endpoints (default deny),
 *      an identity-based policy entry lets one ping the other, and the flows
 *      come back from the ring buffer with their verdicts.
 *
 * The lab stays up afterwards (`membrane lab down` stops it); the demo's network
 * namespaces, links and pins are removed.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, VersionApi, CustomObjectsApi } from '@kubernetes/client-node';
import type { MembraneConfig } from '../config/config.js';
import type { Logger } from '../log/logger.js';
import { labUp } from '../lab/lab.js';
import { appChapter } from './app.js';
import { labKubeConfig } from '../lab/kube.js';
import { createTwoPods, ping } from '../lab/netns.js';
import { attachPacketCounter, detachPacketCounter, findCounter, readPacketCounters } from '../datapath/addon.js';
import { readFileSync } from 'node:fs';
import { POLICY_ALLOW, TRAFFIC_EGRESS, TRAFFIC_INGRESS } from '../datapath/codecs.js';
import { FlowStream, type HubbleFlow } from '../datapath/flows.js';
import { attachEndpoint, EP_F_EGRESS_ENFORCED, EP_F_INGRESS_ENFORCED, openDatapath, purgeDatapath, type EndpointSpec } from '../datapath/lxc.js';
import { ipcacheMap, policyMap } from '../datapath/maps.js';
import { run, type Pod } from '../lab/netns.js';

export interface DemoOptions {
  config: MembraneConfig;
  log: Logger;
  say: (line: string) => void;
}

const PINGS = 5;

export async function runDemo({ config, log, say }: DemoOptions): Promise<void> {
  say('== 1. The lab: a real Kubernetes control plane on this machine ==');
  const up = await labUp(config, { log });
  say(`lab ${up.action === 'started' ? 'started' : 'already up'} in ${up.seconds.toFixed(1)} s${up.built ? ' (built the control plane from source first)' : ''}`);
  const kc = labKubeConfig(config.lab);
  const version = await kc.makeApiClient(VersionApi).getCode();
  say(`kube-apiserver ${version.gitVersion} (${version.goVersion}) at ${kc.getCurrentCluster()?.server ?? '?'}`);
  const node = await kc.makeApiClient(CoreV1Api).readNode({ name: config.lab.nodeName });
  say(`node ${node.metadata?.name} registered with podCIDR ${node.spec?.podCIDR}`);
  const cnps = await kc.makeApiClient(CustomObjectsApi).listClusterCustomObject({ group: 'cilium.io', version: 'v2', plural: 'ciliumnetworkpolicies' });
  say(`CiliumNetworkPolicy CRD served (${(cnps as { items: unknown[] }).items.length} policies so far)`);

  say('');
  say('== 2. The datapath slice: eBPF on a pod veth, counting real packets ==');
  const pinDir = `${config.pinDir}-demo-${process.pid}`;
  const pods = createTwoPods('d');
  try {
    say(`pods: ${pods.a.netns} (${pods.a.ip}) and ${pods.b.netns} (${pods.b.ip}), wired through host veths`);
    const attached = await attachPacketCounter({ iface: pods.a.hostIface, pinDir, bpffsRoot: config.bpffsRoot });
    say(`attached to ${attached.iface} (ifindex ${attached.ifindex}) via ${attached.attachments.map((a) => `${a.direction}:${a.mode}`).join(', ')}; map pinned at ${attached.mapPin}`);
    ping(pods.a, pods.b, PINGS);
    say(`sent ${PINGS} pings from ${pods.a.ip} to ${pods.b.ip}`);
    const counters = readCountersInAnotherProcess(pinDir, config.bpffsRoot);
    say(`read back from the pinned map by another process: ${counters}`);
    const local = await readPacketCounters(pinDir, config.bpffsRoot);
    const out = findCounter(local, attached.ifindex, 'ingress');
    const into = findCounter(local, attached.ifindex, 'egress');
    say(`leaving pod a: ${out?.packets ?? 0n} packets, ${out?.bytes ?? 0n} bytes; entering pod a: ${into?.packets ?? 0n} packets, ${into?.bytes ?? 0n} bytes`);
  } finally {
    await detachPacketCounter({ pinDir, bpffsRoot: config.bpffsRoot }).catch((err: unknown) => log.warn({ err, pinDir }, 'demo cleanup: detach failed'));
    pods.destroy();
  }

  say('');
  say('== 3. The datapath core: identity-based policy, conntrack and flows ==');
  await policyChapter(config, log, say);

  say('');
  say('== 4. The agent: pods from the apiserver, identities, the README policies, enforced ==');
  if (config.lab.node === 'none') {
    say('skipped: lab.node is none (the lab runs no agent or node simulator); unset it to see this part');
  } else {
    await appChapter(config, kc, say);
  }

  say('');
  say('Coming next: service load balancing (kube-proxy replacement) and flow observability (membrane observe).');
  say('The lab stays up: `membrane lab down` stops it.');
}

const ICMP = 1;
const ICMP_ECHO_REQUEST = 8;

async function policyChapter(config: MembraneConfig, log: Logger, say: (line: string) => void): Promise<void> {
  const pinDir = `${config.pinDir}-demo-lxc-${process.pid}`;
  const pods = createTwoPods('p');
  const { a, b } = pods;
  const [idA, idB] = [10_001, 10_002];
  try {
    const opened = await openDatapath({ pinDir, bpffsRoot: config.bpffsRoot });
    say(`bpf_lxc ${opened.outcome} once for the node (build ${opened.buildId.slice(0, 12)}), ${opened.maps.length} maps pinned under ${pinDir}`);
    await ipcacheMap(pinDir, config.bpffsRoot).update([
      [{ prefixLen: 32, addr: a.ip }, { identity: idA }],
      [{ prefixLen: 32, addr: b.ip }, { identity: idB }],
    ]);
    await attachEndpoint({ pinDir, bpffsRoot: config.bpffsRoot, iface: a.hostIface, endpoint: endpointOf(a, idA, 1) });
    await attachEndpoint({ pinDir, bpffsRoot: config.bpffsRoot, iface: b.hostIface, endpoint: endpointOf(b, idB, 2) });
    say(`endpoints: ${a.ip} (identity ${idA}) and ${b.ip} (identity ${idB}), ingress and egress policy enforced`);
    const flows = FlowStream.open(pinDir, config.bpffsRoot);
    try {
      say(`ping ${a.ip} -> ${b.ip} with no policy: ${pingOutcome(a, b)}`);
      await printFlows(flows, say);
      await policyMap(pinDir, config.bpffsRoot).update([
        [{ prefixLen: 96, epId: 1, direction: TRAFFIC_EGRESS, identity: idB, proto: ICMP, dport: ICMP_ECHO_REQUEST }, { action: POLICY_ALLOW, cookie: 1 }],
        [{ prefixLen: 96, epId: 2, direction: TRAFFIC_INGRESS, identity: idA, proto: ICMP, dport: ICMP_ECHO_REQUEST }, { action: POLICY_ALLOW, cookie: 2 }],
      ]);
      say(`policy: identity ${idA} may send ICMP echo to identity ${idB} (egress of ${a.ip}, ingress of ${b.ip}); replies ride conntrack`);
      say(`ping ${a.ip} -> ${b.ip}: ${pingOutcome(a, b)}`);
      say(`ping ${b.ip} -> ${a.ip} (not allowed that way): ${pingOutcome(b, a)}`);
      await printFlows(flows, say);
    } finally {
      flows.close();
    }
  } finally {
    await purgeDatapath({ pinDir, bpffsRoot: config.bpffsRoot }).catch((err: unknown) => log.warn({ err, pinDir }, 'demo cleanup: purge failed'));
    pods.destroy();
  }
}

function endpointOf(pod: Pod, identity: number, epId: number): EndpointSpec {
  return {
    ifindex: Number(readFileSync(`/sys/class/net/${pod.hostIface}/ifindex`, 'utf8').trim()),
    identity,
    ipv4: pod.ip,
    epId,
    flags: EP_F_INGRESS_ENFORCED | EP_F_EGRESS_ENFORCED,
    mac: run('ip', ['netns', 'exec', pod.netns, 'cat', '/sys/class/net/eth0/address']).trim(),
    nodeMac: readFileSync(`/sys/class/net/${pod.hostIface}/address`, 'utf8').trim(),
  };
}

function pingOutcome(from: Pod, to: Pod): string {
  try {
    ping(from, to, 1);
    return 'replied';
  } catch {
    return 'no reply (dropped)';
  }
}

const EVENT_NAMES: Record<number, string> = { 1: 'drop', 4: 'trace', 5: 'policy-verdict' };

async function printFlows(flows: FlowStream, say: (line: string) => void): Promise<void> {
  const batch: HubbleFlow[] = await flows.read(64, 200);
  for (const f of batch) {
    const why = f.verdict === 'DROPPED' ? ` ${f.drop_reason_desc ?? ''}` : '';
    say(`  ${(EVENT_NAMES[f.event_type.type] ?? 'event').padEnd(14)} ${f.IP.source} -> ${f.IP.destination} ${f.traffic_direction ?? ''} ${f.verdict}${why} (identity ${f.source.identity ?? '?'} -> ${f.destination.identity ?? '?'}, ${f.Summary})`);
  }
}

/** Reads the counters through a fresh Node process, so only the bpffs pins connect the two. */
function readCountersInAnotherProcess(pinDir: string, bpffsRoot: string): string {
  const addon = fileURLToPath(new URL('../datapath/addon.js', import.meta.url));
  const script = `const m = await import(${JSON.stringify(addon)}); const c = await m.readPacketCounters(${JSON.stringify(pinDir)}, ${JSON.stringify(bpffsRoot)}); console.log(c.map((x) => x.direction + '=' + x.packets + ' packets').join(', '));`;
  return execFileSync(process.execPath, [...process.execArgv, '--input-type=module', '-e', script], { encoding: 'utf8' }).trim();
}
