/**
 * The server of one simulated pod, run INSIDE the pod's network namespace by the
 * node simulator (`ip netns exec <netns> node pod-server.js <spec-json>`): one
 * process per pod serving every containerPort of the pod on all its addresses.
 *
 * On each port:
 *   TCP  an HTTP request (a request line such as "GET /x HTTP/1.1") is answered
 *        200 with JSON {pod, method, path, headers}; any other first line turns
 *        the connection into an echo (every byte comes back);
 *   UDP  each datagram is sent back to its sender.
 * SCTP has no socket API in Node.js; SCTP ports are served over TCP and UDP
 * like the others (the port number is what policies and probes name).
 *
 * Once every listener is bound it prints one line, {"ready":true,...}, on stdout;
 * a port that cannot be bound makes it print the error on stderr and exit 1.
 * SIGTERM closes the listeners and exits 0. Node built-ins only, so it starts fast.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, type Server, type Socket } from 'node:net';

export interface PodServerSpec {
  namespace: string;
  name: string;
  /** Distinct port numbers to serve (TCP + UDP each). */
  ports: number[];
}

/** What the HTTP side answers. */
export interface EchoHttpAnswer {
  pod: string;
  method: string;
  path: string;
  headers: Record<string, string | string[]>;
}

export function parsePodServerSpec(text: string): PodServerSpec {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new Error(`pod-server: the argument is not JSON (${(err as Error).message})`);
  }
  const o = raw as Partial<PodServerSpec>;
  if (typeof o?.namespace !== 'string' || typeof o.name !== 'string' || !Array.isArray(o.ports)) {
    throw new Error('pod-server: the argument must be {"namespace": string, "name": string, "ports": number[]}');
  }
  for (const p of o.ports) if (!Number.isInteger(p) || p < 1 || p > 65535) throw new Error(`pod-server: ${JSON.stringify(p)} is not a port (1-65535)`);
  return { namespace: o.namespace, name: o.name, ports: [...new Set(o.ports)] };
}

/** "GET /path HTTP/1.1": the first line of an HTTP/1 request. */
const REQUEST_LINE = /^[A-Z][A-Z-]{0,19} \S+ HTTP\/1\.[01]\r?$/;
/** Bytes (no newline yet) that can still grow into a request line. */
function couldBeRequestLine(text: string): boolean {
  const m = /^([A-Z][A-Z-]{0,19})(?: (\S*)(?: (.*))?)?$/s.exec(text);
  if (!m) return false;
  const version = m[3];
  return version === undefined || 'HTTP/1.1\r'.startsWith(version) || 'HTTP/1.0\r'.startsWith(version);
}

/** 'http' | 'echo' once the first bytes decide it, undefined while they might still be either. */
export function classifyFirstBytes(buf: Buffer): 'http' | 'echo' | undefined {
  const text = buf.toString('latin1');
  const nl = text.indexOf('\n');
  if (nl >= 0) return REQUEST_LINE.test(text.slice(0, nl)) ? 'http' : 'echo';
  if (text.length > 8192) return 'echo';
  return couldBeRequestLine(text) ? undefined : 'echo';
}

function answerHttp(pod: string) {
  return (req: IncomingMessage, res: ServerResponse) => {
    const body: EchoHttpAnswer = { pod, method: req.method ?? '', path: req.url ?? '', headers: req.headers as Record<string, string | string[]> };
    const text = JSON.stringify(body) + '\n';
    // Drain the request body, then answer.
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'x-membrane-pod': pod });
      res.end(text);
    });
  };
}

function serveTcp(port: number, pod: string): Promise<Server> {
  const http = createHttpServer(answerHttp(pod));
  // Half-open so an echo can still answer a client that has finished sending.
  const server = createTcpServer({ allowHalfOpen: true }, (socket: Socket) => {
    let buffered = Buffer.alloc(0);
    socket.on('error', () => socket.destroy());
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const kind = classifyFirstBytes(buffered);
      if (kind === undefined) return;
      socket.off('data', onData);
      socket.pause();
      if (kind === 'http') {
        socket.unshift(buffered);
        http.emit('connection', socket);
        socket.resume();
      } else {
        socket.write(buffered);
        socket.pipe(socket);
        socket.resume();
      }
    };
    socket.on('data', onData);
    socket.on('end', () => {
      // A client that sent less than a line and closed: echo what it sent.
      if (buffered.length && socket.listenerCount('data') > 0 && classifyFirstBytes(buffered) === undefined) socket.end(buffered);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host: '0.0.0.0' }, () => resolve(server));
  });
}

function serveUdp(port: number): Promise<UdpSocket> {
  const sock = createSocket('udp4');
  sock.on('message', (msg, rinfo) => sock.send(msg, rinfo.port, rinfo.address));
  return new Promise((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(port, '0.0.0.0', () => {
      sock.off('error', reject);
      sock.on('error', () => undefined);
      resolve(sock);
    });
  });
}

export async function runPodServer(spec: PodServerSpec): Promise<{ close: () => void }> {
  const pod = `${spec.namespace}/${spec.name}`;
  const tcp: Server[] = [];
  const udp: UdpSocket[] = [];
  const close = () => {
    for (const s of tcp) s.close();
    for (const s of udp) s.close();
  };
  try {
    for (const port of spec.ports) {
      tcp.push(await serveTcp(port, pod));
      udp.push(await serveUdp(port));
    }
  } catch (err) {
    close();
    throw err;
  }
  return { close };
}

async function main(): Promise<void> {
  const spec = parsePodServerSpec(process.argv[2] ?? '');
  let server: { close: () => void };
  try {
    server = await runPodServer(spec);
  } catch (err) {
    process.stderr.write(`pod-server ${spec.namespace}/${spec.name}: cannot listen: ${(err as Error).message}\n`);
    process.exit(1);
  }
  process.on('SIGTERM', () => {
    server.close();
    process.exit(0);
  });
  process.stdout.write(JSON.stringify({ ready: true, pid: process.pid, pod: `${spec.namespace}/${spec.name}`, ports: spec.ports }) + '\n');
}

const isMain = process.argv[1] !== undefined && /pod-server\.[jt]s$/.test(process.argv[1]);
if (isMain) {
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(2);
  });
}
