/**
 * The verbs that read the running agent over its API socket: status, endpoint
 * list, identity list, bpf ipcache list, bpf ct list, bpf policy get. Pure
 * formatting here; the answers come from ts/api/client.ts.
 */
import type { Command } from 'commander';
import { callAgent } from '../../api/client.js';
import type { CtView, EndpointView, IdentityView, IpcacheView, PolicyEntryView, StatusResponse } from '../../api/types.js';
import { render, table, UsageError } from '../output.js';
import { contextOf, type CliIO } from '../program.js';

export function formatStatus(s: StatusResponse): string {
  const ok = (b: boolean) => (b ? 'Ok' : 'Error');
  const synced = Object.entries(s.kubernetes.synced);
  const lines = [
    `Agent:            Ok   ${s.agent.version} on ${s.agent.node} (pid ${s.agent.pid}, up ${s.agent.uptimeSeconds}s${s.agent.memory ? `, RSS ${s.agent.memory.rssMB} MB, heap ${s.agent.memory.heapUsedMB} MB` : ''})`,
    `Kubernetes:       ${ok(s.kubernetes.ok)}   ${s.kubernetes.server}; synced ${synced.filter(([, v]) => v).length}/${synced.length}${s.kubernetes.detail ? `; ${s.kubernetes.detail}` : ''}`,
    `Datapath:         ${ok(s.datapath.ok)}   ${s.datapath.pinDir}${s.datapath.detail ? `; ${s.datapath.detail}` : ''}`,
    `Endpoints:        ${s.endpoints.ready}/${s.endpoints.total} ready`,
    `Identities:       ${s.identities.total} (${s.identities.cluster} cluster, ${s.identities.reserved} reserved)`,
    ...(s.policy ? [`Policies:         ${s.policy.policies} imported${s.policy.problems.length ? `, ${s.policy.problems.length} problems:` : ''}`, ...s.policy.problems.map((p) => `  ${p.severity} ${p.policy} ${p.field}: ${p.message}`)] : []),
    ...(s.startup ? [`Last start:       datapath ${s.startup.datapath}, ${s.startup.endpointsRestored} endpoints restored, ${s.startup.firstPassWrites} map writes in the first pass, ready in ${s.startup.readyMs} ms`] : []),
    'Maps:',
    ...s.datapath.maps.map((m) => `  ${m.name.padEnd(16)} ${String(m.entries).padStart(8)} / ${m.maxEntries} (${((100 * m.entries) / Math.max(1, m.maxEntries)).toFixed(1)}%)`),
    'Reconcilers:',
    ...s.reconcilers.map(
      (r) => `  ${r.map.padEnd(16)} ${r.inSync ? 'in sync' : 'pending'}, ${r.entries} entries, last lag ${r.lastLagMs ?? '-'} ms (max ${r.maxLagMs}), ${r.errors} errors${r.lastError ? ` (last: ${r.lastError})` : ''}`,
    ),
  ];
  return lines.join('\n');
}

export function formatEndpoints(eps: EndpointView[]): string {
  const rows: string[][] = [];
  for (const ep of eps) {
    const [first = '', ...rest] = ep.labels;
    rows.push([String(ep.id), ep.policyEnforcement.ingress ? 'Enabled' : 'Disabled', ep.policyEnforcement.egress ? 'Enabled' : 'Disabled', String(ep.identity), first, ep.ipv4, ep.state]);
    for (const label of rest) rows.push(['', '', '', '', label, '', '']);
  }
  return table(['ENDPOINT', 'POLICY (ingress)', 'POLICY (egress)', 'IDENTITY', 'LABELS (source:key[=value])', 'IPv4', 'STATUS'], rows);
}

export function formatIdentities(ids: IdentityView[]): string {
  const rows: string[][] = [];
  for (const id of ids) {
    const [first = '', ...rest] = id.labels;
    rows.push([String(id.id), first]);
    for (const label of rest) rows.push(['', label]);
  }
  return table(['ID', 'LABELS'], rows);
}

export function formatIpcache(entries: IpcacheView[]): string {
  return table(['PREFIX', 'IDENTITY', 'SOURCE'], entries.map((e) => [e.prefix, String(e.identity), e.source]));
}

export function formatCt(entries: CtView[]): string {
  return entries
    .map(
      (e) =>
        `${e.proto} ${e.direction} ${e.src} -> ${e.dst} expires=${e.expiresInSeconds} state=${e.state} RxPackets=${e.rxPackets} RxBytes=${e.rxBytes} TxPackets=${e.txPackets} TxBytes=${e.txBytes} Flags=[${e.flags.join(' ')}] SourceSecurityID=${e.srcIdentity} Endpoint=${e.endpoint}`,
    )
    .join('\n');
}

export function formatPolicy(entries: PolicyEntryView[]): string {
  return table(
    ['DIRECTION', 'IDENTITY', 'PORT/PROTO', 'ACTION', 'PROXY PORT', 'COOKIE'],
    entries.map((e) => [e.direction, e.identity === 0 ? 'ANY' : String(e.identity), e.port, e.action, e.proxyPort ? String(e.proxyPort) : '-', String(e.cookie)]),
  );
}

interface Verb<T> {
  path: string[];
  summary: string;
  argument?: string;
  apiPath: (arg?: string) => string;
  human: (value: T) => string;
}

const VERBS: Array<Verb<never>> = [
  { path: ['status'], summary: 'Show the health of the agent, datapath and Kubernetes sync', apiPath: () => '/v1/status', human: formatStatus },
  { path: ['endpoint', 'list'], summary: 'List the local endpoints with their identity and policy enforcement', apiPath: () => '/v1/endpoints', human: formatEndpoints },
  { path: ['identity', 'list'], summary: 'List security identities and their labels', apiPath: () => '/v1/identities', human: formatIdentities },
  { path: ['bpf', 'ipcache', 'list'], summary: 'List the ipcache map: prefix to identity', apiPath: () => '/v1/bpf/ipcache', human: formatIpcache },
  { path: ['bpf', 'ct', 'list'], summary: 'List connection-tracking entries of the pinned CT maps', apiPath: () => '/v1/bpf/ct', human: formatCt },
  {
    path: ['bpf', 'policy', 'get'],
    summary: "Dump the policy map entries of one endpoint (its id)",
    argument: '<endpoint>',
    apiPath: (arg) => `/v1/bpf/policy/${encodeURIComponent(arg ?? '')}`,
    human: formatPolicy,
  },
] as Array<Verb<never>>;

/** The verb paths this module serves (the pending-verb table must not register them again). */
export const AGENT_VERB_PATHS = VERBS.map((v) => v.path.join(' '));

export function registerAgentVerbs(program: Command, io: CliIO): void {
  for (const verb of VERBS) {
    let parent = program;
    for (const name of verb.path.slice(0, -1)) {
      parent = parent.commands.find((c) => c.name() === name) ?? parent.command(name).description(`${name} commands`);
    }
    const leaf = parent.command(verb.path[verb.path.length - 1]!).description(verb.summary);
    if (verb.argument) leaf.argument(verb.argument);
    leaf.action(async (...args: unknown[]) => {
      const command = args[args.length - 1] as Command;
      const arg = verb.argument ? (args[0] as string) : undefined;
      if (verb.argument && !/^\d+$/.test(arg ?? '')) throw new UsageError(`${verb.path.join(' ')}: ${verb.argument} must be an endpoint id (a number), got ${JSON.stringify(arg)}`);
      const ctx = contextOf(command, io);
      const value = await callAgent<never>({ socketPath: ctx.config.apiSocket, method: 'GET', path: verb.apiPath(arg) });
      ctx.print(render({ value, human: verb.human }, ctx.output));
    });
  }
}
