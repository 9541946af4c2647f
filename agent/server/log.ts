// The agent's logger (ARCHITECTURE §13): pino writing one JSON object per line on stdout
// ({time, level, msg, ...fields}, `level` the name: debug, info, warn, error), as log collectors on a node
// expect; tests read the `ready` line from it. On a terminal (or with --log-format pretty) the same records
// are printed as readable lines by a small formatter in this process (no transport thread).
//
// Lines logged while a call runs carry that call's fields: `withLogFields` (AsyncLocalStorage) is entered by
// the CNI service (pod, container), the pipeline handler (connection, service, pod) and healing (connection),
// and every line logged inside — by any element, mechanism or store — gets them (./call-scope.ts). Fields given on the line
// itself win. `childLogger` binds fields explicitly where no call is running.
import { pino, type DestinationStream, type Logger as PinoLogger } from 'pino'
import type { LogLevel } from '../config/config.js'
import { currentScope, inCallScope } from './call-scope.js'

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void
  info(msg: string, fields?: Record<string, unknown>): void
  warn(msg: string, fields?: Record<string, unknown>): void
  error(msg: string, fields?: Record<string, unknown>): void
  /** The same logger with `fields` on every line (optional: test loggers may omit it). */
  child?(fields: Record<string, unknown>): Logger
}

export type LogFormat = 'json' | 'pretty'

export interface LoggerOptions {
  /** json (default), or pretty: `HH:MM:SS.mmm LEVEL msg key=value ...`. */
  format?: LogFormat
}

/** Runs `fn` with `fields` added to every line logged inside it (nested calls add to the outer ones). */
export function withLogFields<T>(fields: Readonly<object>, fn: () => T): T {
  return inCallScope(fields, fn)
}

/** `log` with `fields` bound: pino's child when it is one of ours, a wrapper otherwise. */
export function childLogger(log: Logger, fields: Record<string, unknown>): Logger {
  if (log.child !== undefined) return log.child(fields)
  const at = (f: (m: string, x?: Record<string, unknown>) => void) => (msg: string, extra: Record<string, unknown> = {}) => f.call(log, msg, { ...fields, ...extra })
  return { debug: at(log.debug), info: at(log.info), warn: at(log.warn), error: at(log.error), child: (more) => childLogger(log, { ...fields, ...more }) }
}

/** Errors as {name, message, code}: what the agent's lines have always carried (pino's default adds the stack). */
function plainError(value: Error): Record<string, unknown> {
  const code = (value as Error & { code?: unknown }).code
  return { name: value.name, message: value.message, ...(code === undefined ? {} : { code }) }
}

function withPlainErrors(fields: Record<string, unknown>): Record<string, unknown> {
  let out: Record<string, unknown> | undefined
  for (const [k, v] of Object.entries(fields)) {
    if (v instanceof Error) (out ??= { ...fields })[k] = plainError(v)
  }
  return out ?? fields
}

function wrap(p: PinoLogger): Logger {
  const at = (lvl: LogLevel) => (msg: string, fields?: Record<string, unknown>) => {
    if (!p.isLevelEnabled(lvl)) return
    if (fields === undefined) p[lvl](msg)
    else p[lvl](withPlainErrors(fields), msg)
  }
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: (fields) => wrap(p.child(withPlainErrors(fields))) }
}

/**
 * The agent's logger at `level`. `write` replaces stdout (tests capture lines with it). The pretty form
 * formats each JSON record as it is written.
 */
export function jsonLogger(level: LogLevel, write?: (line: string) => void, opts: LoggerOptions = {}): Logger {
  const out = write ?? ((l: string) => process.stdout.write(l))
  const sink: DestinationStream = opts.format === 'pretty' ? { write: (line: string) => out(prettyLine(line)) } : write === undefined ? pino.destination({ fd: 1, sync: true }) : { write: out }
  const p = pino(
    {
      level,
      base: null,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      // A copy: pino merges the line's own fields into what mixin returns.
      mixin: () => ({ ...currentScope()?.fields }),
    },
    sink,
  )
  return wrap(p)
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {}, child: () => silentLogger }

const LEVEL_TAGS: Record<string, string> = { debug: 'DEBUG', info: 'INFO ', warn: 'WARN ', error: 'ERROR' }
const COLOURS: Record<string, string> = { debug: '\x1b[90m', info: '\x1b[32m', warn: '\x1b[33m', error: '\x1b[31m' }

/** One JSON record as a readable line: `11:02:38.123 INFO  ready socket=/run/nsm/agent.sock ...`. */
export function prettyLine(json: string, colour = process.stdout.isTTY): string {
  let rec: Record<string, unknown>
  try {
    rec = JSON.parse(json) as Record<string, unknown>
  } catch {
    return json
  }
  const { time, level, msg, ...fields } = rec
  const lvl = String(level)
  const clock = typeof time === 'string' ? time.slice(11, 23) : ''
  const tag = LEVEL_TAGS[lvl] ?? lvl.toUpperCase()
  const shown = colour ? `${COLOURS[lvl] ?? ''}${tag}\x1b[0m` : tag
  const rest = Object.entries(fields).map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) && v !== '' ? v : JSON.stringify(v)}`)
  return `${clock} ${shown} ${String(msg)}${rest.length > 0 ? ` ${rest.join(' ')}` : ''}\n`
}
