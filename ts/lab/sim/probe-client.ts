/**
 * One connection attempt, run INSIDE the source pod's network namespace by
 * `membrane lab probe` (`ip netns exec <netns> node probe-client.js <json>`).
 * Prints one JSON line (ProbeAttempt) on stdout and exits 0 whatever the
 * outcome; a malformed argument exits 2. Node built-ins only, so it starts fast.
 *
 *   tcp        connect; then send a line and wait for it to come back (the lab's
 *              pod servers echo), or, with http, send the request and read the answer
 *   udp        send a datagram on a connected socket and wait for it to come back;
 *              an ICMP port unreachable is "refused", silence is "timed-out"
 */
import { createSocket } from 'node:dgram';
import { request } from 'node:http';
import { connect, isIPv4, type Socket } from 'node:net';

export type ProbeOutcome = 'connected' | 'refused' | 'timed-out' | 'unreachable' | 'reset' | 'error';

export interface ProbeRequest {
  ip: string;
  port: number;
  protocol: 'tcp' | 'udp';
  timeoutMs: number;
  http?: { method: string; path: string; headers: Record<string, string> };
}

export interface ProbeAttempt {
  outcome: ProbeOutcome;
  ms: number;
  detail: string;
  /** tcp without http, udp: whether the bytes sent came back. */
  echoed?: boolean;
  http?: { status: number; headers: Record<string, string | string[] | undefined>; body: string };
}

export function parseProbeRequest(text: string): ProbeRequest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new Error(`probe-client: the argument is not JSON (${(err as Error).message})`);
  }
  const o = raw as Partial<ProbeRequest>;
  if (typeof o?.ip !== 'string' || !isIPv4(o.ip)) throw new Error(`probe-client: ip ${JSON.stringify(o?.ip)} is not an IPv4 address`);
  if (!Number.isInteger(o.port) || o.port! < 1 || o.port! > 65535) throw new Error(`probe-client: port ${JSON.stringify(o.port)} is not 1-65535`);
  if (o.protocol !== 'tcp' && o.protocol !== 'udp') throw new Error(`probe-client: protocol ${JSON.stringify(o.protocol)} is not tcp or udp`);
  if (!Number.isInteger(o.timeoutMs) || o.timeoutMs! < 1) throw new Error(`probe-client: timeoutMs ${JSON.stringify(o.timeoutMs)} is not a positive integer`);
  if (o.http !== undefined && (typeof o.http.method !== 'string' || typeof o.http.path !== 'string' || typeof o.http.headers !== 'object')) {
    throw new Error('probe-client: http must be {method, path, headers}');
  }
  return o as ProbeRequest;
}

/** The outcome a socket error stands for. */
export function outcomeOfError(code: string | undefined): ProbeOutcome {
  switch (code) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'ETIMEDOUT':
      return 'timed-out';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EHOSTDOWN':
      return 'unreachable';
    case 'ECONNRESET':
    case 'EPIPE':
      return 'reset';
    default:
      return 'error';
  }
}

const errCode = (err: unknown) => (err as NodeJS.ErrnoException).code;

function probeTcpEcho(r: ProbeRequest, started: number): Promise<ProbeAttempt> {
  return new Promise((resolve) => {
    const line = `membrane-probe ${process.pid}-${started}\n`;
    let connected = false;
    let got = '';
    let done = false;
    const socket: Socket = connect({ host: r.ip, port: r.port });
    const finish = (a: Omit<ProbeAttempt, 'ms'>) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ ...a, ms: Date.now() - started });
    };
    const timer = setTimeout(() => {
      if (connected) finish({ outcome: 'connected', echoed: false, detail: `connected; nothing echoed within ${r.timeoutMs} ms` });
      else finish({ outcome: 'timed-out', detail: `no answer to the connection attempt within ${r.timeoutMs} ms` });
    }, r.timeoutMs);
    socket.on('connect', () => {
      connected = true;
      socket.write(line);
    });
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.length >= line.length) finish({ outcome: 'connected', echoed: got.startsWith(line), detail: got.startsWith(line) ? 'connected; echo received' : 'connected; the answer was not an echo' });
    });
    socket.on('end', () => connected && finish({ outcome: 'connected', echoed: false, detail: 'connected; the peer closed without echoing' }));
    socket.on('error', (err) => {
      if (connected) finish({ outcome: 'connected', echoed: false, detail: `connected, then ${errCode(err) ?? err.message}` });
      else finish({ outcome: outcomeOfError(errCode(err)), detail: `${errCode(err) ?? ''} ${err.message}`.trim() });
    });
  });
}

function probeHttp(r: ProbeRequest, started: number): Promise<ProbeAttempt> {
  const http = r.http!;
  return new Promise((resolve) => {
    let connected = false;
    let done = false;
    const finish = (a: Omit<ProbeAttempt, 'ms'>) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.destroy();
      resolve({ ...a, ms: Date.now() - started });
    };
    const req = request({ host: r.ip, port: r.port, method: http.method, path: http.path, headers: http.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => finish({ outcome: 'connected', detail: `HTTP ${res.statusCode ?? 0}`, http: { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') } }));
      res.on('error', (err) => finish({ outcome: 'connected', detail: `HTTP ${res.statusCode ?? 0}, then ${err.message}`, http: { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') } }));
    });
    req.on('socket', (s: Socket) => s.on('connect', () => (connected = true)));
    const timer = setTimeout(() => {
      if (connected) finish({ outcome: 'timed-out', detail: `connected, but no HTTP answer within ${r.timeoutMs} ms` });
      else finish({ outcome: 'timed-out', detail: `no answer to the connection attempt within ${r.timeoutMs} ms` });
    }, r.timeoutMs);
    req.on('error', (err) => {
      if (connected) finish({ outcome: 'reset', detail: `connected, then ${errCode(err) ?? err.message} before an HTTP answer` });
      else finish({ outcome: outcomeOfError(errCode(err)), detail: `${errCode(err) ?? ''} ${err.message}`.trim() });
    });
    req.end();
  });
}

function probeUdp(r: ProbeRequest, started: number): Promise<ProbeAttempt> {
  return new Promise((resolve) => {
    const payload = Buffer.from(`membrane-probe ${process.pid}-${started}`);
    const sock = createSocket('udp4');
    let done = false;
    const finish = (a: Omit<ProbeAttempt, 'ms'>) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.close();
      resolve({ ...a, ms: Date.now() - started });
    };
    const timer = setTimeout(() => finish({ outcome: 'timed-out', detail: `no datagram came back within ${r.timeoutMs} ms` }), r.timeoutMs);
    sock.on('message', (msg) => finish({ outcome: 'connected', echoed: msg.equals(payload), detail: msg.equals(payload) ? 'echo received' : 'a datagram came back, not the echo' }));
    sock.on('error', (err) => finish({ outcome: outcomeOfError(errCode(err)), detail: `${errCode(err) ?? ''} ${err.message}`.trim() }));
    sock.connect(r.port, r.ip, () => sock.send(payload));
  });
}

export function runProbe(r: ProbeRequest): Promise<ProbeAttempt> {
  const started = Date.now();
  if (r.protocol === 'udp') return probeUdp(r, started);
  return r.http ? probeHttp(r, started) : probeTcpEcho(r, started);
}

const isMain = process.argv[1] !== undefined && /probe-client\.[jt]s$/.test(process.argv[1]);
if (isMain) {
  let req: ProbeRequest;
  try {
    req = parseProbeRequest(process.argv[2] ?? '');
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(2);
  }
  void runProbe(req).then((a) => process.stdout.write(JSON.stringify(a) + '\n'));
}
