/**
 * The packed-struct codecs of the datapath maps and the flow expander, without the
 * kernel: byte layouts (network-order fields), validation, and Hubble-shaped flows
 * from hand-built compact records.
 */
import test from 'ava';
import {
  ctEntryCodec,
  ctKeyCodec,
  endpointInfoCodec,
  ipcacheKeyCodec,
  ipv4ToNumber,
  ipv4ToString,
  packAll,
  policyEntryCodec,
  policyKeyCodec,
  unpackAll,
  type CtEntry,
  type PolicyKey,
} from '../../ts/datapath/codecs.js';
import { dropReasonName, expandFlows, FLOW_RECORD_SIZE, toHubbleJsonLine } from '../../ts/datapath/flows.js';

test('IPv4 text and numbers convert both ways and reject junk', (t) => {
  t.is(ipv4ToNumber('10.0.1.116'), (10 << 24) + (0 << 16) + (1 << 8) + 116);
  t.is(ipv4ToNumber('255.255.255.255'), 0xffffffff);
  t.is(ipv4ToString(ipv4ToNumber('192.168.0.1')), '192.168.0.1');
  for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1..2.3', 'a.b.c.d', '1.2.3.4 ', '1234.1.1.1']) {
    t.throws(() => ipv4ToNumber(bad), { instanceOf: RangeError }, bad);
  }
});

test('policy keys pack like struct policy_key: host-order ids, network-order port', (t) => {
  const key: PolicyKey = { prefixLen: 96, epId: 0x0102, direction: 2, identity: 0x0a0b0c0d, proto: 6, dport: 8080 };
  const buf = packAll(policyKeyCodec, [key]);
  t.is(buf.length, 16);
  t.deepEqual([...buf], [96, 0, 0, 0, 0x02, 0x01, 2, 0, 0x0d, 0x0c, 0x0b, 0x0a, 6, 0, 0x1f, 0x90]);
  t.deepEqual(unpackAll(policyKeyCodec, buf), [key]);
  t.throws(() => packAll(policyKeyCodec, [{ ...key, prefixLen: 97 }]), { message: /prefixLen/ });
  t.throws(() => packAll(policyKeyCodec, [{ ...key, dport: 70000 }]), { message: /dport/ });
  const entry = { action: 3, flags: 0, proxyPort: 15001, cookie: 42 };
  t.deepEqual(unpackAll(policyEntryCodec, packAll(policyEntryCodec, [entry])), [entry]);
});

test('ipcache, endpoint and conntrack structs round-trip', (t) => {
  const ipc = { prefixLen: 24, addr: '10.1.2.0' };
  const buf = packAll(ipcacheKeyCodec, [ipc]);
  t.deepEqual([...buf], [24, 0, 0, 0, 10, 1, 2, 0]);
  t.deepEqual(unpackAll(ipcacheKeyCodec, buf), [ipc]);

  const ep = { ifindex: 7, identity: 1234, ipv4: '10.250.0.3', epId: 3, flags: 3, mac: '02:00:00:00:00:01', nodeMac: 'aa:bb:cc:dd:ee:ff' };
  t.deepEqual(unpackAll(endpointInfoCodec, packAll(endpointInfoCodec, [ep])), [ep]);
  t.throws(() => packAll(endpointInfoCodec, [{ ...ep, mac: '02:00' }]), { message: /MAC/ });

  const key = { saddr: '10.0.0.1', daddr: '10.0.0.2', sport: 41234, dport: 80, proto: 6, direction: 2 };
  const entry: CtEntry = {
    fwdPackets: 2n ** 40n, fwdBytes: 5n, revPackets: 1n, revBytes: 9n, expires: 1000, created: 900, lastReport: 950,
    srcIdentity: 1, dstIdentity: 2, epId: 3, revNatIndex: 0, fwdTcpFlags: 0x12, revTcpFlags: 0x12, flags: 1, proxyPort: 0,
  };
  const kb = packAll(ctKeyCodec, [key]);
  t.deepEqual([...kb.subarray(8, 12)], [0xa1, 0x12, 0, 80], 'ports in network order');
  t.deepEqual(unpackAll(ctKeyCodec, kb), [key]);
  t.deepEqual(unpackAll(ctEntryCodec, packAll(ctEntryCodec, [entry])), [entry]);
});

/** A compact record as the addon writes it (crates/datapath/src/flows.rs, CompactFlow). */
function record(fields: Partial<Record<string, number>>): Buffer {
  const b = Buffer.alloc(FLOW_RECORD_SIZE);
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  v.setUint32(0, fields.secs ?? 1_700_000_000, true);
  v.setUint32(4, fields.nanos ?? 5, true);
  v.setUint32(8, fields.src ?? ipv4ToNumber('10.0.1.116'), true);
  v.setUint32(12, fields.dst ?? ipv4ToNumber('10.0.1.117'), true);
  v.setUint16(16, fields.sport ?? 38160, true);
  v.setUint16(18, fields.dport ?? 8080, true);
  v.setUint32(20, fields.srcId ?? 60176, true);
  v.setUint32(24, fields.dstId ?? 4242, true);
  v.setUint32(28, fields.ifindex ?? 9, true);
  v.setUint16(32, fields.srcEp ?? 4070, true);
  v.setUint16(34, fields.dstEp ?? 0, true);
  v.setUint8(40, fields.type ?? 1);
  v.setUint8(41, fields.verdict ?? 2);
  v.setUint8(42, fields.reason ?? 133);
  v.setUint8(43, fields.proto ?? 6);
  v.setUint8(44, fields.tcpFlags ?? 0x02);
  v.setUint8(45, fields.direction ?? 2);
  v.setUint8(46, fields.traceReason ?? 1);
  v.setUint8(47, fields.reply ?? 0);
  v.setUint8(56, fields.point ?? 5);
  return b;
}

test('compact records expand into hubble observe -o json flows', (t) => {
  const drop = record({});
  const reply = record({ type: 4, verdict: 1, reason: 0, tcpFlags: 0x12, direction: 1, traceReason: 3, reply: 1, point: 101, srcEp: 0, dstEp: 12 });
  const udp = record({ proto: 17, type: 4, verdict: 1, reason: 0, tcpFlags: 0 });
  const icmp = record({ proto: 1, type: 5, verdict: 4, reason: 133 });
  const records = Buffer.concat([drop, reply, udp, icmp]);
  const [a, b, c, d] = expandFlows({ count: 4, records }, 'node-1');
  t.like(a, {
    time: '2023-11-14T22:13:20.000000005Z',
    verdict: 'DROPPED',
    drop_reason: 133,
    drop_reason_desc: 'POLICY_DENIED',
    IP: { source: '10.0.1.116', destination: '10.0.1.117', ipVersion: 'IPv4' },
    l4: { TCP: { source_port: 38160, destination_port: 8080, flags: { SYN: true } } },
    source: { ID: 4070, identity: 60176 },
    destination: { identity: 4242 },
    Type: 'L3_L4',
    event_type: { type: 1, sub_type: 133 },
    traffic_direction: 'EGRESS',
    is_reply: false,
    Summary: 'TCP Flags: SYN',
    node_name: 'node-1',
  });
  t.false('ID' in (a?.destination ?? {}), 'default values are omitted');
  t.like(b, { verdict: 'FORWARDED', trace_reason: 'REPLY', is_reply: true, trace_observation_point: 'TO_ENDPOINT', traffic_direction: 'INGRESS', Summary: 'TCP Flags: SYN, ACK' });
  t.is(b?.drop_reason, undefined);
  t.deepEqual(c?.l4, { UDP: { source_port: 38160, destination_port: 8080 } });
  t.like(d, { verdict: 'AUDIT', Summary: 'ICMPv4 type 0 code 0', event_type: { type: 5 } });
  const line = JSON.parse(toHubbleJsonLine(a!)) as { flow: unknown; node_name: string; time: string };
  t.is(line.node_name, 'node-1');
  t.is(line.time, a!.time);
  t.is(dropReasonName(181), 'POLICY_DENY');
  t.is(dropReasonName(7), 'DROP_REASON_UNKNOWN');
  t.deepEqual(expandFlows({ count: 3, records: Buffer.alloc(64) }).length, 1, 'count is capped by the buffer');
});
