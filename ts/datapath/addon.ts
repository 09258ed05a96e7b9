/**
 * The typed face of Membrane's N-API addon (crates/node) for the agent and the CLI.
 *
 * The addon is thin and batch-oriented: every call that touches the kernel returns a
 * Promise and moves a whole batch (all counters, all attachments). This module adds
 * only what TypeScript callers need on top: a `DatapathError` class to branch on, and
 * re-exported types. Counters are `bigint` (u64 in the kernel).
 *
 * Everything the datapath creates is pinned under a pin directory in bpffs (config
 * `pinDir`, default /sys/fs/bpf/membrane), so it outlives the calling process: one
 * process can attach, another read, a third detach.
 */
import * as native from '../../index.js';
import type {
  AttachPacketCounterOptions,
  AttachPacketCounterResult,
  DatapathInfo,
  DetachPacketCounterOptions,
  DetachPacketCounterResult,
  PacketCounter,
  TcAttachmentInfo,
  TcxProgramInfo,
} from '../../index.js';

export type {
  AttachPacketCounterOptions,
  AttachPacketCounterResult,
  DatapathInfo,
  DatapathObjectInfo,
  DetachPacketCounterOptions,
  DetachPacketCounterResult,
  PacketCounter,
  TcAttachmentInfo,
  TcxProgramInfo,
} from '../../index.js';

/** A hook of an interface: ingress = received by it, egress = sent by it. */
export type Direction = PacketCounter['direction'];

/** How a program is attached: a pinned tcx link or a netlink cls_bpf filter. */
export type AttachMode = NonNullable<AttachPacketCounterOptions['mode']>;

/**
 * A failure of the datapath. `code` is the errno name (`EPERM`, `ENOENT`, `ENODEV`,
 * `EINVAL`...) or `EINCOMPATIBLE` (something pinned does not match this build) or
 * `ELAYOUT` (a Rust mirror disagrees with the C struct); `op` and `object` name what
 * was attempted on what.
 */
export class DatapathError extends Error {
  override readonly name = 'DatapathError';
  /**
   * For a batch that failed part way: entries `[0, done)` of the input were completed
   * and entry `done` failed.
   */
  done?: number;
  /**
   * For a batch that failed part way: entries completed in all. Large batches run as
   * concurrent slices, so entries after `done` may have been written too (`written >=
   * done`); a caller needing the exact contents treats them as unknown.
   */
  written?: number;
  /** For a batch that failed part way: entries asked for. */
  total?: number;

  constructor(
    message: string,
    readonly code: string,
    readonly errno: number | undefined,
    readonly op: string,
    readonly object: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Whether `err` is a datapath failure (optionally with the given code). */
export function isDatapathError(err: unknown, code?: string): err is DatapathError {
  return err instanceof DatapathError && (code === undefined || err.code === code);
}

interface NativeErrorFields {
  done?: unknown;
  written?: unknown;
  total?: unknown;
  message?: unknown;
  code?: unknown;
  errno?: unknown;
  op?: unknown;
  object?: unknown;
}

/** Converts what the addon threw into a DatapathError; anything else passes through. */
export function toDatapathError(err: unknown): unknown {
  if (!(err instanceof Error)) return err;
  const fields = err as Error & NativeErrorFields;
  if (typeof fields.code !== 'string' || typeof fields.op !== 'string') return err;
  const converted = new DatapathError(
    err.message,
    fields.code,
    typeof fields.errno === 'number' ? fields.errno : undefined,
    fields.op,
    typeof fields.object === 'string' ? fields.object : '',
    { cause: err },
  );
  if (typeof fields.done === 'number') converted.done = fields.done;
  if (typeof fields.written === 'number') converted.written = fields.written;
  if (typeof fields.total === 'number') converted.total = fields.total;
  return converted;
}

async function call<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    throw toDatapathError(err);
  }
}

/**
 * Attaches the packet counter to both tc hooks of `options.iface` (tcx, or netlink
 * cls_bpf where tcx is refused) and pins programs, map and links under
 * `options.pinDir`. Mounts bpffs if needed. Idempotent per interface.
 */
export function attachPacketCounter(options: AttachPacketCounterOptions): Promise<AttachPacketCounterResult> {
  return call(() => native.attachPacketCounter(options));
}

/** Every counter in the map pinned under `pinDir`, summed over CPUs. Rejects with ENOENT if none is pinned. */
export function readPacketCounters(pinDir: string, bpffsRoot?: string): Promise<PacketCounter[]> {
  return call(() => native.readPacketCounters(pinDir, bpffsRoot));
}

/**
 * Detaches the counter from `options.iface`, or from every interface; once nothing
 * is attached, unpins programs and map and removes empty pin directories. Idempotent.
 */
export function detachPacketCounter(options: DetachPacketCounterOptions): Promise<DetachPacketCounterResult> {
  return call(() => native.detachPacketCounter(options));
}

/** The counter's attachments recorded under `pinDir`. */
export function listPacketCounterAttachments(pinDir: string, bpffsRoot?: string): Promise<TcAttachmentInfo[]> {
  return call(() => native.listPacketCounterAttachments(pinDir, bpffsRoot));
}

/** Every program on the tcx hooks of `iface`, in run order, whoever attached it. */
export function listTcxPrograms(iface: string): Promise<TcxProgramInfo[]> {
  return call(() => native.listTcxPrograms(iface));
}

/** Versions, kernel release and the embedded eBPF objects. Synchronous; no kernel I/O. */
export function datapathInfo(): DatapathInfo {
  try {
    return native.datapathInfo();
  } catch (err) {
    throw toDatapathError(err);
  }
}

/** The counter of one (ifindex, direction) in a batch read, if present. */
export function findCounter(
  counters: readonly PacketCounter[],
  ifindex: number,
  direction: Direction,
): PacketCounter | undefined {
  return counters.find((c) => c.ifindex === ifindex && c.direction === direction);
}
