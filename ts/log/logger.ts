/**
 * The one logger of the agent, the CLI and the lab: pino, structured, one line per
 * event. Every call site names the object an event is about (endpoint, policy,
 * service, component...) as fields, never inside the message string.
 */
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger } from 'pino';

export const LOG_LEVELS: readonly LevelWithSilent[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export function isLogLevel(value: string): value is LevelWithSilent {
  return (LOG_LEVELS as readonly string[]).includes(value);
}

export interface LoggerOptions {
  /** Which part of Membrane is logging: agent, cli, lab, cni... */
  component: string;
  level?: LevelWithSilent;
  /** Where lines go; defaults to stderr so that CLI output on stdout stays machine-readable. */
  destination?: NodeJS.WritableStream | number;
}

export function createLogger(options: LoggerOptions): Logger {
  const level = options.level ?? levelFromEnv() ?? 'info';
  const destination = options.destination ?? 2;
  const stream = typeof destination === 'number' ? pino.destination({ fd: destination, sync: true }) : destination;
  return pino(
    {
      level,
      base: { component: options.component, pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    stream,
  );
}

function levelFromEnv(): LevelWithSilent | undefined {
  const raw = process.env['MEMBRANE_LOG_LEVEL'];
  if (raw === undefined || raw === '') return undefined;
  if (!isLogLevel(raw)) {
    throw new Error(`MEMBRANE_LOG_LEVEL=${raw} is not a log level; use one of ${LOG_LEVELS.join(', ')}`);
  }
  return raw;
}
