/**
 * A TCP proxy on 127.0.0.1 in front of the apiserver, so a test can cut every
 * connection (a network blip) or stop accepting (an outage) and watch clients
 * recover. TLS passes through untouched.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';

export class TcpProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  port = 0;
  /** Connections accepted since creation. */
  accepted = 0;

  constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {}

  /** Starts accepting on `port` (0: any free port, then the same port on later calls). */
  async listen(port = this.port): Promise<number> {
    if (this.server) return this.port;
    const server = createServer((client) => {
      this.accepted++;
      const upstream = createConnection({ host: this.targetHost, port: this.targetPort });
      this.sockets.add(client);
      this.sockets.add(upstream);
      const drop = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    this.server = server;
    const addr = server.address();
    if (addr && typeof addr === 'object') this.port = addr.port;
    return this.port;
  }

  /** Client connections open now. */
  get active(): number {
    return this.sockets.size / 2;
  }

  /** Resets every open connection; keeps accepting new ones. Returns how many were cut. */
  cutAll(): number {
    const n = this.active;
    for (const s of this.sockets) s.resetAndDestroy();
    this.sockets.clear();
    return n;
  }

  /** Stops accepting (clients get connection refused) and cuts every connection. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.cutAll();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
