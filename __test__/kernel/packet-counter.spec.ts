/**
 * The first vertical datapath slice on a real kernel: the packet counter is attached
 * by one process to the host-side veth of a "pod" namespace, real pings cross it, a
 * second process reads the counters from the pinned map after the first has exited,
 * and detach leaves no pin, link or filter behind.
 *
 * Needs root and BPF. Without them these tests fail with an explanation; they never
 * skip or pass vacuously.
 */
import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  datapathInfo,
  detachPacketCounter,
  findCounter,
  listPacketCounterAttachments,
  listTcxPrograms,
  readPacketCounters,
  isDatapathError,
  type AttachPacketCounterResult,
  type PacketCounter,
} from '../../ts/datapath/addon.js';
import { createTwoPods, ping, run, type TwoPods } from './helpers/netns.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, '..', '..');
const cli = join(here, 'helpers', 'datapath-cli.ts');

/** Ethernet + IPv4 + ICMP header + ping's default 56 payload bytes. */
const PING_FRAME_BYTES = 98n;
const PINGS = 5;

function requireKernel(): void {
  if (process.platform !== 'linux') throw new Error('kernel tests need Linux');
  if (process.getuid?.() !== 0) {
    throw new Error('kernel tests need root (BPF, network namespaces, bpffs); run `sudo npx ava __test__/kernel/`');
  }
  for (const tool of ['ip', 'ping', 'tc']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new Error(`kernel tests need \`${tool}\` (iproute2, iputils-ping)`);
  }
}

/** Runs the datapath CLI helper in a fresh Node process and parses its JSON output. */
function inChildProcess<T>(args: string[]): T {
  const child = spawnSync(process.execPath, ['--import=tsx', cli, ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 60_000,
  });
  const parsed = child.stdout.trim() === '' ? undefined : (JSON.parse(child.stdout) as unknown);
  if (child.status !== 0) {
    throw new Error(`datapath-cli ${args.join(' ')} exited ${child.status}: ${child.stdout}${child.stderr}`);
  }
  return parsed as T;
}

type WireCounter = Omit<PacketCounter, 'packets' | 'bytes'> & { packets: string; bytes: string };

function ifindexOf(iface: string): number {
  return Number(run('cat', [`/sys/class/net/${iface}/ifindex`]).trim());
}

/** Sets up pods and a unique pin dir, and registers cleanup that runs even on failure. */
function fixture(t: ExecutionContext, tag: string): { pods: TwoPods; pinDir: string } {
  requireKernel();
  const pinDir = `/sys/fs/bpf/membrane-test-${process.pid}-${tag}`;
  t.teardown(async () => {
    try {
      await detachPacketCounter({ pinDir });
    } catch (err) {
      t.log(`teardown detach of ${pinDir} failed: ${String(err)}`);
    }
    // Last resort: unlinking pins releases links, programs and maps.
    rmSync(pinDir, { recursive: true, force: true });
  });
  const pods = createTwoPods(tag);
  t.teardown(() => pods.destroy());
  return { pods, pinDir };
}

function counter(counters: WireCounter[], ifindex: number, direction: 'ingress' | 'egress'): { packets: bigint; bytes: bigint } {
  const c = counters.find((x) => x.ifindex === ifindex && x.direction === direction);
  return { packets: BigInt(c?.packets ?? 0), bytes: BigInt(c?.bytes ?? 0) };
}

test.serial('the addon embeds the packet counter object', (t) => {
  const info = datapathInfo();
  const object = info.objects.find((o) => o.name === 'packet_counter');
  t.truthy(object, JSON.stringify(info));
  t.deepEqual(object?.programs, ['mbr_cnt_egress', 'mbr_cnt_ingress']);
  t.deepEqual(object?.maps, ['mbr_pkt_counts']);
});

test.serial('counts pings per direction on a pod veth; another process reads the pinned map after the loader exited', async (t) => {
  const { pods, pinDir } = fixture(t, 'x');
  const iface = pods.a.hostIface;
  const ifindex = ifindexOf(iface);

  // Process 1 loads, attaches, pins, and exits.
  const attached = inChildProcess<AttachPacketCounterResult>(['attach', iface, pinDir]);
  t.is(attached.ifindex, ifindex);
  t.true(attached.loaded);
  t.deepEqual(
    attached.attachments.map((a) => [a.direction, a.mode, a.program]),
    [
      ['ingress', 'tcx', 'mbr_cnt_ingress'],
      ['egress', 'tcx', 'mbr_cnt_egress'],
    ],
    'auto mode uses tcx on this kernel',
  );
  for (const a of attached.attachments) t.true(existsSync(a.pinPath), a.pinPath);
  t.true(existsSync(attached.mapPin));

  // The programs stay on the hook after the loader is gone.
  const onHook = await listTcxPrograms(iface);
  t.deepEqual(
    onHook.map((p) => [p.direction, p.name]),
    [
      ['ingress', 'mbr_cnt_ingress'],
      ['egress', 'mbr_cnt_egress'],
    ],
  );

  // Real traffic: pod a pings pod b through the host. Requests enter the host at
  // a's veth (tc ingress), replies leave through it (tc egress).
  ping(pods.a, pods.b, PINGS);

  // Process 2 reads the pinned map.
  const counters = inChildProcess<WireCounter[]>(['read', pinDir]);
  t.log(JSON.stringify(counters));
  const ingress = counter(counters, ifindex, 'ingress');
  const egress = counter(counters, ifindex, 'egress');
  t.true(ingress.packets >= BigInt(PINGS), `ingress packets ${ingress.packets} >= ${PINGS}`);
  t.true(egress.packets >= BigInt(PINGS), `egress packets ${egress.packets} >= ${PINGS}`);
  t.true(ingress.bytes >= BigInt(PINGS) * PING_FRAME_BYTES, `ingress bytes ${ingress.bytes}`);
  t.true(egress.bytes >= BigInt(PINGS) * PING_FRAME_BYTES, `egress bytes ${egress.bytes}`);
  t.true(counters.every((c) => c.ifindex === ifindex), 'only the attached interface is counted');

  // This process (the third) detaches; pins and links are gone.
  const detached = await detachPacketCounter({ pinDir, iface });
  t.is(detached.detached.length, 2);
  t.false(existsSync(pinDir), `${pinDir} removed`);
  t.deepEqual(await listTcxPrograms(iface), [], 'no tcx program left on the veth');
  const err = await t.throwsAsync(readPacketCounters(pinDir));
  t.true(isDatapathError(err, 'ENOENT'), String(err));
});

test.serial('netlink cls_bpf fallback and tcx share one pinned map; partial and full detach', async (t) => {
  const { pods, pinDir } = fixture(t, 'y');
  const ifA = pods.a.hostIface;
  const ifB = pods.b.hostIface;
  const [indexA, indexB] = [ifindexOf(ifA), ifindexOf(ifB)];

  const a = inChildProcess<AttachPacketCounterResult>(['attach', ifA, pinDir, 'tcx']);
  const b = inChildProcess<AttachPacketCounterResult>(['attach', ifB, pinDir, 'netlink']);
  t.true(a.loaded);
  t.false(b.loaded, 'the second interface reuses the pinned programs');
  t.deepEqual(b.attachments.map((x) => x.mode), ['netlink', 'netlink']);
  t.regex(run('tc', ['filter', 'show', 'dev', ifB, 'ingress']), /mbr_cnt_ingress/);
  t.regex(run('tc', ['filter', 'show', 'dev', ifB, 'egress']), /mbr_cnt_egress/);
  t.is((await listPacketCounterAttachments(pinDir)).length, 4);

  // b pings a: b's veth sees requests on ingress and replies on egress; a's veth the reverse.
  ping(pods.b, pods.a, PINGS);
  const counters = inChildProcess<WireCounter[]>(['read', pinDir]);
  t.log(JSON.stringify(counters));
  for (const [ifindex, direction] of [
    [indexA, 'ingress'],
    [indexA, 'egress'],
    [indexB, 'ingress'],
    [indexB, 'egress'],
  ] as const) {
    const c = counter(counters, ifindex, direction);
    t.true(c.packets >= BigInt(PINGS), `${ifindex}/${direction}: ${c.packets} packets`);
    t.true(c.bytes >= BigInt(PINGS) * PING_FRAME_BYTES, `${ifindex}/${direction}: ${c.bytes} bytes`);
  }

  // Detach b in a child process: its filters go, a keeps counting into the same map.
  inChildProcess(['detach', pinDir, ifB]);
  t.notRegex(run('tc', ['filter', 'show', 'dev', ifB, 'ingress']), /mbr_cnt/);
  t.notRegex(run('tc', ['filter', 'show', 'dev', ifB, 'egress']), /mbr_cnt/);
  const before = findCounter(await readPacketCounters(pinDir), indexA, 'egress')?.packets ?? 0n;
  ping(pods.b, pods.a, 2);
  const after = findCounter(await readPacketCounters(pinDir), indexA, 'egress')?.packets ?? 0n;
  t.true(after >= before + 2n, `a still counts: ${before} -> ${after}`);

  // Detach all: nothing is left.
  const report = await detachPacketCounter({ pinDir });
  t.deepEqual(report.detached.map((x) => [x.ifindex, x.direction]), [
    [indexA, 'ingress'],
    [indexA, 'egress'],
  ]);
  t.false(existsSync(pinDir));
  t.deepEqual(await listTcxPrograms(ifA), []);
});

test.serial('errors name the interface, the operation and the errno', async (t) => {
  requireKernel();
  const pinDir = `/sys/fs/bpf/membrane-test-${process.pid}-err`;
  t.teardown(() => rmSync(pinDir, { recursive: true, force: true }));
  const { attachPacketCounter } = await import('../../ts/datapath/addon.js');
  const noDevice = await t.throwsAsync(attachPacketCounter({ iface: 'mbr-nosuch0', pinDir }));
  t.true(isDatapathError(noDevice, 'ENODEV'), String(noDevice));
  t.regex(noDevice?.message ?? '', /mbr-nosuch0/);
  t.false(existsSync(pinDir), 'a failed attach leaves no pins');

  const badDir = await t.throwsAsync(attachPacketCounter({ iface: 'lo', pinDir: '/tmp/not-bpffs' }));
  t.true(isDatapathError(badDir, 'EINVAL'), String(badDir));
  t.regex(badDir?.message ?? '', /pin directory/);

  // A mode outside the union is still rejected at run time (e.g. from untyped JSON config).
  const badMode = await t.throwsAsync(attachPacketCounter({ iface: 'lo', pinDir, mode: 'xdp' as never }));
  t.true(isDatapathError(badMode, 'EINVAL'), String(badMode));
  t.regex(badMode?.message ?? '', /attach mode/);
});
