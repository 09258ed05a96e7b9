/**
 * `membrane lab up | down | status | build | probe`: the single-node lab cluster.
 */
import type { Command } from 'commander';
import { ensureLabBinaries, type LabBinaries } from '../../lab/build.js';
import { labDown, labStatus, labUp, type LabDownResult, type LabStatus, type LabUpResult } from '../../lab/lab.js';
import { labKubeConfig } from '../../lab/kube.js';
import { runNodeSimulator } from '../../lab/sim/run.js';
import { createLogger } from '../../log/logger.js';
import { DEFAULT_PROBE_TIMEOUT_MS, humanProbe, parseProbeArgs, ProbeUsageError, resolveProbe, runProbeInNetns, type ProbeArgs, type ProbeResult } from '../../lab/probe.js';
import { NotAvailableError, render, table, UsageError } from '../output.js';
import { contextOf, type CliIO } from '../program.js';

/** Runs fn with an AbortSignal that fires on SIGINT/SIGTERM, so `up` can undo what it started. */
async function interruptible<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  const onSignal = () => ac.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await fn(ac.signal);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

export function registerLabCommands(program: Command, io: CliIO): void {
  const lab = program
    .command('lab')
    .description('Run a single-node Kubernetes lab on this machine (real etcd, kube-apiserver, kube-controller-manager)')
    .addHelpText(
      'after',
      `
The control plane is built from source at the versions pinned in ts/lab/components/go.mod
and cached in <lab.cacheDir>/lab-bin/. Everything listens on 127.0.0.1 only. Settings
(lab.dir, ports, CIDRs) come from the config file or MEMBRANE_LAB_* variables, e.g.
MEMBRANE_LAB_APISERVER_PORT=26443. up and down need root (blackhole routes).`,
    );

  lab
    .command('up')
    .description('Start the lab (build the control plane first if it is not cached); does nothing if it is already up')
    .option('--timeout <seconds>', 'how long each component may take to become healthy', '180')
    .action(async (opts: { timeout: string }, command: Command) => {
      const ctx = contextOf(command, io);
      const timeout = Number(opts.timeout);
      if (!Number.isFinite(timeout) || timeout <= 0) throw new UsageError(`--timeout ${opts.timeout} is not a number of seconds`);
      const result = await interruptible((signal) => labUp(ctx.config, { log: ctx.log, signal, startTimeoutSeconds: timeout }));
      ctx.print(render({ value: result, human: humanUp }, ctx.output));
    });

  lab
    .command('down')
    .description('Stop the lab: stop the processes it started, remove its routes and runtime state (logs are kept)')
    .option('--purge', 'also remove the logs and the lab directory')
    .action(async (opts: { purge?: boolean }, command: Command) => {
      const ctx = contextOf(command, io);
      const result = await labDown(ctx.config, { log: ctx.log, purge: opts.purge === true });
      ctx.print(render({ value: result, human: humanDown }, ctx.output));
    });

  lab
    .command('status')
    .description('Show each component (running, pid, endpoint, version), the node, the CRDs and the routes')
    .action(async (_opts: unknown, command: Command) => {
      const ctx = contextOf(command, io);
      const status = await labStatus(ctx.config);
      ctx.print(render({ value: status, human: humanStatus }, ctx.output));
    });

  lab
    .command('build')
    .description('Build and cache the control-plane binaries from source, without starting anything')
    .option('--force', 'rebuild even if the binaries for the pinned versions are cached')
    .action(async (opts: { force?: boolean }, command: Command) => {
      const ctx = contextOf(command, io);
      const bins = await interruptible((signal) => ensureLabBinaries({ cacheDir: ctx.config.lab.cacheDir, log: ctx.log, force: opts.force === true, signal }));
      ctx.print(render({ value: buildValue(bins), human: humanBuild }, ctx.output));
    });

  lab
    .command('node-simulator', { hidden: true })
    .description('Run the lab node simulator in the foreground (lab up starts it)')
    .requiredOption('--lab-dir <dir>', 'the lab directory (its state.json gives the settings)')
    .requiredOption('--cni-plugin <path>', 'the membrane-cni binary')
    .action(async (opts: { labDir: string; cniPlugin: string }, command: Command) => {
      const ctx = contextOf(command, io);
      await runNodeSimulator(opts.labDir, opts.cniPlugin, createLogger({ component: 'node-simulator', level: ctx.config.logLevel }));
    });

  lab
    .command('probe')
    .description('Connect from inside a lab pod to a pod, service or IP and report the outcome (exit 0 only when connected)')
    .argument('<from>', 'source pod: namespace/name')
    .argument('<to>', 'destination: a pod (namespace/name), a service (svc/namespace/name) or an IPv4 address')
    .option('--port <port>', 'destination port (required)')
    .option('--protocol <protocol>', 'tcp, udp or sctp', 'tcp')
    .option('--http <method-and-path...>', 'send an HTTP request, e.g. --http GET /healthz (tcp only)')
    .option('-H, --header <name:value>', 'an HTTP request header (repeatable; with --http)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--timeout <ms>', `how long to wait for the connection and the answer, in milliseconds (default ${DEFAULT_PROBE_TIMEOUT_MS})`)
    .addHelpText(
      'after',
      `
The probe runs inside the source pod's network namespace (the lab's node simulator
made it), so it needs root. Outcomes: connected (TCP handshake done; the lab's pod
servers echo what is sent, and answer HTTP requests with their method, path and
headers as JSON), refused (RST or ICMP port unreachable), timed out (nothing came
back: e.g. dropped by policy), unreachable. SCTP is not supported (Node.js has no
SCTP sockets). Examples:
  membrane lab probe default/client default/server --port 8080
  membrane lab probe default/client svc/default/web --port 80 --http GET /api -H x-user:alice
  membrane lab probe default/client 10.244.0.9 --port 53 --protocol udp --timeout 1000`,
    )
    .action(async (from: string, to: string, opts: { port?: string; protocol?: string; http?: string[]; header?: string[]; timeout?: string }, command: Command) => {
      const ctx = contextOf(command, io);
      let args: ProbeArgs;
      try {
        args = parseProbeArgs({ from, to, ...opts });
      } catch (err) {
        if (err instanceof ProbeUsageError) throw new UsageError(err.message);
        throw err;
      }
      if (args.protocol === 'sctp') throw new NotAvailableError('SCTP probes are not supported: Node.js has no SCTP sockets, so the lab can neither send nor serve SCTP. Probe with --protocol tcp or udp. Nothing was sent.');
      if (process.getuid?.() !== 0) throw new UsageError('membrane lab probe needs root: it runs the connection inside the source pod\'s network namespace (ip netns exec)');
      const result = await runProbeInNetns(await resolveProbe(labKubeConfig(ctx.config.lab), args), args);
      ctx.print(render({ value: result, human: humanProbe }, ctx.output));
      if (result.outcome !== 'connected') throw new ProbeNotConnected(result);
    });
}

/** The probe ran and did not connect: the result is printed; the exit code is 1. */
class ProbeNotConnected extends Error {
  constructor(r: ProbeResult) {
    super(`${r.from} could not connect to ${r.to} ${r.protocol.toUpperCase()}/${r.port}: ${r.outcome}`);
  }
}

function buildValue(b: LabBinaries) {
  return { key: b.key, dir: b.dir, built: b.built, versions: b.manifest.versions, goVersion: b.manifest.goVersion, builtAt: b.manifest.builtAt, binaries: b.paths };
}

function humanBuild(v: ReturnType<typeof buildValue>): string {
  return [
    `${v.built ? 'Built' : 'Already built'}: Kubernetes ${v.versions.kubernetes}, etcd ${v.versions.etcd} (${v.goVersion}, ${v.builtAt})`,
    `Cache: ${v.dir}`,
  ].join('\n');
}

function humanUp(r: LabUpResult): string {
  const head =
    r.action === 'already-up'
      ? 'The lab is already up; nothing was changed.'
      : `The lab is up (${r.seconds}s${r.built ? ', including building the control plane' : ''}).`;
  return [head, ...r.notes.map((n) => `Note: ${n}`), '', humanStatus(r.status)].join('\n');
}

function humanDown(r: LabDownResult): string {
  const lines: string[] = [];
  if (r.action === 'not-up') lines.push(`The lab in ${r.dir} is not up; nothing to stop.`);
  else lines.push(`The lab in ${r.dir} is down.`);
  for (const s of [...r.node.stopped, ...r.stopped]) lines.push(`  ${s.component} (pid ${s.pid}): ${s.outcome === 'not-running' ? 'was not running' : s.outcome === 'killed' ? 'killed after the grace period' : 'stopped'}`);
  if (r.node.podsSwept.length) lines.push(`  tore down ${r.node.podsSwept.length} simulated pods the node simulator had left`);
  for (const s of r.strays) lines.push(`  stray ${s.binary} (pid ${s.pid}): ${s.outcome}`);
  for (const c of r.routesRemoved) lines.push(`  removed route blackhole ${c}`);
  if (r.removed.length && r.action === 'not-up') lines.push(`  removed leftover files: ${r.removed.join(', ')}`);
  if (r.logsKept) lines.push(`Logs kept in ${r.logsKept} (membrane lab down --purge removes them).`);
  return lines.join('\n');
}

function humanStatus(s: LabStatus): string {
  const lines = [`Lab: ${s.state}${s.upAt ? ` since ${s.upAt}` : ''}   (${s.dir})`];
  lines.push(
    table(
      ['COMPONENT', 'STATE', 'PID', 'ENDPOINT', 'VERSION', 'HEALTH'],
      s.components.map((c) => [
        c.name,
        c.running ? 'running' : 'stopped',
        c.pid !== null && c.running ? String(c.pid) : '-',
        c.endpoint,
        c.version ?? '-',
        c.healthy === null ? '-' : c.healthy ? 'ok' : 'failing',
      ]),
    ),
  );
  if (s.nodeProcesses.some((p) => p.running || s.state !== 'down')) {
    lines.push(
      '',
      table(
        ['NODE PROCESS', 'STATE', 'PID', 'HEALTH'],
        s.nodeProcesses.map((p) => [p.name, p.running ? 'running' : 'stopped', p.pid !== null && p.running ? String(p.pid) : '-', p.healthy === null ? '-' : p.healthy ? 'ok' : `failing (${p.detail})`]),
      ),
    );
  }
  if (s.state === 'down') return lines.join('\n') + '\n\nStart it with: membrane lab up';
  if (s.node) {
    lines.push(
      '',
      s.node.registered ? `Node ${s.node.name}: registered, podCIDR ${s.node.podCIDR ?? '-'}, Ready=${s.node.ready ?? '-'}` : `Node ${s.node.name}: not registered`,
    );
  }
  if (s.crds.length) lines.push(`CRDs: ${s.crds.map((c) => `${c.name} (${c.established ? 'established' : 'not established'})`).join(', ')}`);
  if (s.routes.length) lines.push(`Routes: ${s.routes.map((r) => `blackhole ${r.cidr} (${r.purpose}) ${r.present ? 'present' : 'MISSING'}`).join(', ')}`);
  if (s.binaries) lines.push(`Binaries: Kubernetes ${s.binaries.versions.kubernetes}, etcd ${s.binaries.versions.etcd} from ${s.binaries.dir}`);
  if (s.kubeconfig) lines.push(`Kubeconfig: ${s.kubeconfig}   (export KUBECONFIG=${s.kubeconfig})`);
  lines.push('Logs: ' + [...s.components.map((c) => c.log), ...s.nodeProcesses.map((p) => p.log)].join(', '));
  return lines.join('\n');
}
