/**
 * A tiny one-shot driver of the datapath addon, run as a separate process by the
 * kernel tests so that loading, reading and detaching happen in different processes
 * (everything must survive through the bpffs pins alone).
 *
 *   node --import=tsx datapath-cli.ts attach <iface> <pinDir> [auto|tcx|netlink]
 *   node --import=tsx datapath-cli.ts read <pinDir>
 *   node --import=tsx datapath-cli.ts detach <pinDir> [iface]
 *
 * Prints one JSON document on stdout (bigints as decimal strings). On failure prints
 * `{"error": {...}}` and exits 1.
 */
import {
  attachPacketCounter,
  detachPacketCounter,
  readPacketCounters,
  isDatapathError,
  type AttachMode,
} from '../../../ts/datapath/addon.js';

function print(value: unknown): void {
  process.stdout.write(JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) + '\n');
}

function isMode(value: string): value is AttachMode {
  return value === 'auto' || value === 'tcx' || value === 'netlink';
}

async function main(argv: string[]): Promise<void> {
  const [command, ...args] = argv;
  switch (command) {
    case 'attach': {
      const [iface, pinDir, mode = 'auto'] = args;
      if (iface === undefined || pinDir === undefined || !isMode(mode)) throw new Error('usage: attach <iface> <pinDir> [auto|tcx|netlink]');
      print(await attachPacketCounter({ iface, pinDir, mode }));
      return;
    }
    case 'read': {
      const [pinDir] = args;
      if (pinDir === undefined) throw new Error('usage: read <pinDir>');
      print(await readPacketCounters(pinDir));
      return;
    }
    case 'detach': {
      const [pinDir, iface] = args;
      if (pinDir === undefined) throw new Error('usage: detach <pinDir> [iface]');
      print(await detachPacketCounter(iface === undefined ? { pinDir } : { pinDir, iface }));
      return;
    }
    default:
      throw new Error(`unknown command ${JSON.stringify(command)}; use attach, read or detach`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  const error = isDatapathError(err)
    ? { message: err.message, code: err.code, errno: err.errno, op: err.op, object: err.object }
    : { message: err instanceof Error ? err.message : String(err) };
  print({ error });
  process.exitCode = 1;
});
