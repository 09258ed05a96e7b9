/**
 * `npm run demo` / `membrane demo`: shows what Membrane does today, on this
 * machine, with real parts. Each capability adds its chapter as it lands.
 *
 *   1. the lab: a real control plane (etcd, kube-apiserver, kube-controller-manager)
 *      built from source, with Membrane's CRDs and a registered Node;
 *   2. the datapath slice: an eBPF program loaded once, attached with tcx to a
 *      pod's host-side veth, counting real pings; the counters are read back
 *      from the pinned map by a separate process.
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
import { labKubeConfig } from '../lab/kube.js';
import { createTwoPods, ping } from '../lab/netns.js';
import { attachPacketCounter, detachPacketCounter, findCounter, readPacketCounters } from '../datapath/addon.js';

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
  say('Coming next: endpoints, identity-based policy, conntrack and flows in the datapath; the agent;');
  say('the CNI plugin and pods from the apiserver. The lab stays up: `membrane lab down` stops it.');
}

/** Reads the counters through a fresh Node process, so only the bpffs pins connect the two. */
function readCountersInAnotherProcess(pinDir: string, bpffsRoot: string): string {
  const addon = fileURLToPath(new URL('../datapath/addon.js', import.meta.url));
  const script = `const m = await import(${JSON.stringify(addon)}); const c = await m.readPacketCounters(${JSON.stringify(pinDir)}, ${JSON.stringify(bpffsRoot)}); console.log(c.map((x) => x.direction + '=' + x.packets + ' packets').join(', '));`;
  return execFileSync(process.execPath, [...process.execArgv, '--input-type=module', '-e', script], { encoding: 'utf8' }).trim();
}
