import pino, { type Logger } from 'pino';

/**
 * Structured logs: one pino root logger, child loggers carry `{ component, table, runId, step, batch, partition }`
 * as fields. Secrets never reach a line: known secret fields are redacted, and connection strings are scrubbed of
 * their password wherever they appear in a message.
 */

export type { Logger };

export const REDACT_PATHS = [
  'password', '*.password', '*.*.password',
  'connectionString', '*.connectionString', '*.*.connectionString',
  'sasl', '*.sasl',
  'authorization', '*.authorization', 'headers.authorization',
];

export interface LoggerOptions {
  level?: string;
  /** Write to this destination instead of stderr (tests capture lines this way). */
  destination?: pino.DestinationStream;
  /** Pretty, coloured output for people at a terminal. */
  pretty?: boolean;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const base: pino.LoggerOptions = {
    level: options.level ?? 'info',
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    formatters: { log: scrubObject },
    hooks: { logMethod: scrubMessageArgs },
    serializers: { err: serializeError, error: serializeError },
  };
  if (options.destination) return pino(base, options.destination);
  // stderr, always: stdout belongs to the command's output (a report, or one JSON document with --json).
  if (options.pretty) return pino({ ...base, transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', destination: 2 } } });
  return pino(base, pino.destination({ fd: 2, sync: true }));
}

// postgres://user:secret@host, Password=secret; pwd=secret — the shapes of pg, mssql and JDBC-ish strings.
// Drivers accept passwords that were never URL-encoded, so the password of a URL runs to the LAST '@' of its
// token ('p@ss', 'a/b'), and across a space when the next token still holds the '@' ('a b@host'). Redacting a
// little too much in a message is harmless; leaking the tail of a password is not.
const URL_PASSWORD = /(\b[a-z][a-z0-9+.-]*:\/\/[^:/?#\s@]*:)((?:\S| (?=\S*@))*)(@)(?=[^@\s]*(?:\s|$))/gi;
// key=value: a quoted value ("a;b", 'a;b', ODBC {a;b}) ends at its closing quote (doubled quotes escape it);
// an unquoted one runs to the next ';' or the end of the line, spaces included.
const KV_PASSWORD = /(\b(?:password|pwd)\s*=\s*)("(?:[^"]|"")*"|'(?:[^']|'')*'|\{(?:[^}]|\}\})*\}|[^;\r\n]*)/gi;

/** Removes passwords from any connection string inside the text. */
export function scrubSecrets(text: string): string {
  return text.replace(URL_PASSWORD, '$1[redacted]$3').replace(KV_PASSWORD, '$1[redacted]');
}

function scrubObject(obj: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) out[k] = typeof v === 'string' ? scrubSecrets(v) : v;
  return out;
}

function scrubMessageArgs(this: Logger, args: unknown[], method: (...a: unknown[]) => void): void {
  method.apply(this, args.map((a) => (typeof a === 'string' ? scrubSecrets(a) : a)));
}

/** Error properties that are objects and still worth a log line; any other object (a driver's client, say) is left out. */
const ERROR_OBJECT_FIELDS = new Set(['cause', 'aggregateErrors']);

/**
 * An error as a log field: strings scrubbed, and object-valued properties other than its cause left out. Drivers hang
 * their connection on errors (pg's idle-client errors carry the client, with its connection parameters and
 * password), and pino's serializer would print every enumerable property.
 */
function serializeError(err: unknown): unknown {
  const serialized = pino.stdSerializers.err(err as Error) as unknown as Record<string, unknown>;
  if (serialized === null || typeof serialized !== 'object') return serialized;
  for (const [key, value] of Object.entries(serialized)) {
    if (typeof value === 'string') serialized[key] = scrubSecrets(value);
    else if (value !== null && typeof value === 'object' && !ERROR_OBJECT_FIELDS.has(key)) serialized[key] = '[omitted]';
  }
  return serialized;
}
