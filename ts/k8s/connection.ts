/**
 * Connection reuse towards the apiserver. client-node builds a fresh https.Agent
 * for every request, i.e. a TCP + TLS handshake per call (~10-20 ms of CPU on
 * each side). The agent makes many small calls (identity reads, status
 * stamps, list pages), so it shares one keep-alive agent per KubeConfig, with
 * the kubeconfig's TLS material. Credentials sent as headers (tokens, exec
 * plugins) are still applied per request by client-node. The agent is rebuilt
 * every ttlMs so rotated client certificates are picked up.
 *
 *   const conn = new KubeConnection(kc);
 *   const custom = conn.apiClient(CustomObjectsApi);   // like kc.makeApiClient, with keep-alive
 *   const transport = new HttpsTransport(kc, { connection: conn });
 */
import { Agent as HttpsAgent, type RequestOptions } from 'node:https';
import { createConfiguration, ServerConfiguration, type Configuration, type KubeConfig, type RequestContext } from '@kubernetes/client-node';

export interface KubeConnectionOptions {
  /** Rebuild the agent (re-reading certificates) this often. */
  ttlMs?: number;
  /** Idle keep-alive sockets are closed after this long (kept below the apiserver's own idle timeout). */
  idleSocketMs?: number;
}

export class KubeConnection {
  private agent: HttpsAgent | undefined;
  private createdAt = 0;
  private building: Promise<HttpsAgent | undefined> | undefined;
  private readonly ttlMs: number;
  private readonly idleSocketMs: number;

  constructor(
    readonly kc: KubeConfig,
    options: KubeConnectionOptions = {},
  ) {
    this.ttlMs = options.ttlMs ?? 10 * 60_000;
    this.idleSocketMs = options.idleSocketMs ?? 30_000;
  }

  /**
   * The shared keep-alive agent, or undefined when the cluster is reached
   * through a proxy or plain HTTP (client-node's own per-request agent then).
   */
  async httpsAgent(): Promise<HttpsAgent | undefined> {
    const cluster = this.kc.getCurrentCluster();
    if (!cluster || cluster.proxyUrl || !cluster.server.startsWith('https:')) return undefined;
    if (this.agent && Date.now() - this.createdAt < this.ttlMs) return this.agent;
    this.building ??= this.build().finally(() => (this.building = undefined));
    return this.building;
  }

  private async build(): Promise<HttpsAgent> {
    const o: RequestOptions = {};
    await this.kc.applyToHTTPSOptions(o);
    const agent = new HttpsAgent({
      ca: o.ca,
      cert: o.cert,
      key: o.key,
      pfx: o.pfx,
      passphrase: o.passphrase,
      servername: o.servername,
      ...(o.rejectUnauthorized === undefined ? {} : { rejectUnauthorized: o.rejectUnauthorized }),
      keepAlive: true,
      // Applies to idle (free) sockets only: Node destroys a free socket on timeout, never an active one.
      timeout: this.idleSocketMs,
    });
    // The previous agent is dropped, not destroyed: its open watches carry on; its idle sockets time out.
    this.agent = agent;
    this.createdAt = Date.now();
    return agent;
  }

  /** Closes every connection of the current agent (idle and active); later requests open new ones. */
  close(): void {
    this.agent?.destroy();
    this.agent = undefined;
  }

  /** A client-node API client (CoreV1Api, CustomObjectsApi, ...) whose requests reuse connections. */
  apiClient<T>(apiClass: new (config: Configuration) => T): T {
    const cluster = this.kc.getCurrentCluster();
    if (!cluster) throw new Error('the kubeconfig has no current cluster');
    const config = createConfiguration({
      baseServer: new ServerConfiguration(cluster.server, {}),
      authMethods: {
        default: {
          getName: () => 'kubeconfig with keep-alive',
          applySecurityAuthentication: async (context: RequestContext) => {
            await this.kc.applySecurityAuthentication(context);
            const agent = await this.httpsAgent();
            if (agent) context.setAgent(agent);
          },
        },
      },
    });
    return new apiClass(config);
  }
}
