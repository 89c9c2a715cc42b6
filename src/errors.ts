/**
 * One error hierarchy for highwater. Every failure is classified once, where it is caught, into a code; whether it
 * may be retried is data on the code, not a decision scattered through the call sites.
 */

export const ERROR_CODES = {
  CONFIG_INVALID: { retriable: false, exitCode: 2, hint: 'fix the named fields in the configuration file' },
  USAGE: { retriable: false, exitCode: 2, hint: 'see --help for the command' },
  DB_UNAVAILABLE: { retriable: true, exitCode: 1, hint: 'check that the database is running and reachable at the host and port of its connection string' },
  DB_AUTH: { retriable: false, exitCode: 1, hint: 'the database refused the login: check the user and password in the connection string (or HIGHWATER_DB_<NAME>_URL)' },
  DB_MISSING: { retriable: false, exitCode: 1, hint: 'the database named in the connection string does not exist (or the login may not open it): create it or fix the name' },
  NOT_INITIALISED: { retriable: false, exitCode: 1, hint: 'run `highwater init` first: it creates the control store, the target tables and the topics' },
  METRICS_PORT_IN_USE: { retriable: false, exitCode: 2, hint: 'give this process another port: --metrics-port <n>, HIGHWATER_METRICS_PORT, or metrics.ports.<role> (poll, consume and run have different defaults)' },
  PREFLIGHT_FAILED: { retriable: false, exitCode: 1, hint: 'fix the problems listed above; `highwater check` lists them again without changing anything' },
  DB_TRANSIENT: { retriable: true, exitCode: 1, hint: 'a transient database condition; it is retried' },
  DB_CONSTRAINT: { retriable: false, exitCode: 1, hint: 'the row violates a constraint of the target' },
  DB_QUERY: { retriable: false, exitCode: 1, hint: 'the statement failed; check the table and column names in the configuration' },
  KAFKA_UNAVAILABLE: { retriable: true, exitCode: 1, hint: 'check that the Kafka brokers are running and reachable (kafka.brokers, HIGHWATER_KAFKA_BROKERS); kafka.startupTimeoutMs bounds the wait' },
  KAFKA_AUTH: { retriable: false, exitCode: 1, hint: 'the broker refused the SASL login: check kafka.sasl (mechanism, username, password) against the listener, and kafka.ssl' },
  KAFKA_REJECTED: { retriable: false, exitCode: 1, hint: 'the broker refused the record (size, authorisation or topic settings)' },
  DECODE_FAILED: { retriable: false, exitCode: 1, hint: 'the record is not a highwater event of a known schema' },
  BLOB_TOO_LARGE: { retriable: false, exitCode: 1, hint: 'raise poll.maxBlobBytes or exclude the row' },
  LEASE_HELD: { retriable: false, exitCode: 1, hint: 'another poller holds the lease; wait for it or for its expiry' },
  SCHEMA_TOO_NEW: { retriable: false, exitCode: 1, hint: 'run the highwater version that migrated this database, or point this one at another schema' },
  RUN_NOT_FOUND: { retriable: false, exitCode: 2, hint: 'list runs with `highwater runs`' },
  CHECK_DIFFERENCE: { retriable: false, exitCode: 3, hint: 'the check found differences; see the report' },
  STOPPED: { retriable: false, exitCode: 0, hint: 'stopped by a shutdown signal between batches; `highwater resume <runId>` continues it' },
  INTERNAL: { retriable: false, exitCode: 1, hint: 'this is a bug in highwater; please report it with the log' },
} as const satisfies Record<string, { retriable: boolean; exitCode: number; hint: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export class HighwaterError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HighwaterError';
    this.code = code;
  }

  get retriable(): boolean {
    return ERROR_CODES[this.code].retriable;
  }

  get exitCode(): number {
    return ERROR_CODES[this.code].exitCode;
  }

  get hint(): string {
    return ERROR_CODES[this.code].hint;
  }
}

/** A configuration that failed validation; `issues` name each bad field by its path. */
export class ConfigError extends HighwaterError {
  readonly issues: readonly { path: string; message: string }[];

  constructor(source: string, issues: readonly { path: string; message: string }[]) {
    const lines = issues.map((i) => `  - ${i.path || '(root)'}: ${i.message}`).join('\n');
    super('CONFIG_INVALID', `invalid configuration in ${source}:\n${lines}`);
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

/** Turns whatever was thrown into an Error, so a catch never has to guess (`throw 'x'` happens in drivers). */
export function coerceError(thrown: unknown): Error {
  if (thrown instanceof Error) return thrown;
  if (typeof thrown === 'string') return new Error(thrown);
  try {
    return new Error(JSON.stringify(thrown));
  } catch {
    return new Error(String(thrown));
  }
}

// PostgreSQL SQLSTATE → code. Class 08 (connection), 57P0x (shutdown), 53xxx (resources), 40001/40P01
// (serialization, deadlock) are worth retrying; class 23 (integrity) and 42 (syntax, undefined objects) are not.
const PG_STATE_TABLE: readonly [RegExp, ErrorCode][] = [
  [/^28/, 'DB_AUTH'],
  [/^3D000$/, 'DB_MISSING'],
  [/^08/, 'DB_UNAVAILABLE'],
  [/^57P0[1-3]$/, 'DB_UNAVAILABLE'],
  [/^53/, 'DB_TRANSIENT'],
  [/^40001$|^40P01$/, 'DB_TRANSIENT'],
  [/^55P03$/, 'DB_TRANSIENT'],
  [/^23/, 'DB_CONSTRAINT'],
  [/^22/, 'DB_QUERY'],
  [/^42/, 'DB_QUERY'],
];

// SQL Server error numbers: 1205 deadlock victim, 1222 lock timeout, 40197/40501/40613/49918-49920 Azure
// throttling and failover, 4060 database unavailable (also during an Azure failover, so it stays retriable),
// 18456 login failed; 2627/2601 duplicate key and 547 FK violation are not retriable.
const MSSQL_NUMBER_TABLE: ReadonlyMap<number, ErrorCode> = new Map<number, ErrorCode>([
  [1205, 'DB_TRANSIENT'],
  [1222, 'DB_TRANSIENT'],
  [40197, 'DB_TRANSIENT'],
  [40501, 'DB_TRANSIENT'],
  [40613, 'DB_UNAVAILABLE'],
  [49918, 'DB_TRANSIENT'],
  [49919, 'DB_TRANSIENT'],
  [49920, 'DB_TRANSIENT'],
  [4060, 'DB_UNAVAILABLE'],
  [18456, 'DB_AUTH'],
  [2627, 'DB_CONSTRAINT'],
  [2601, 'DB_CONSTRAINT'],
  [547, 'DB_CONSTRAINT'],
  [515, 'DB_CONSTRAINT'],
  [208, 'DB_QUERY'],
  [207, 'DB_QUERY'],
  [102, 'DB_QUERY'],
]);

// Socket-level failures from any driver (pg, tedious, kafkajs) mean the peer is unreachable for now.
const SOCKET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ESOCKET', 'ETIMEOUT', 'ECONNCLOSED']);

/** Classifies a database driver error (pg or mssql) into a highwater error, keeping the original as `cause`. */
export function classifyDbError(thrown: unknown, context: string): HighwaterError {
  if (thrown instanceof HighwaterError) return thrown;
  const err = coerceError(thrown) as Error & { code?: unknown; number?: unknown };
  const code = dbErrorCode(err);
  return new HighwaterError(code, `${context}: ${err.message}`, { cause: err });
}

function dbErrorCode(err: Error & { code?: unknown; number?: unknown }): ErrorCode {
  const sqlState = typeof err.code === 'string' ? err.code : '';
  if (/^[0-9A-Z]{5}$/.test(sqlState)) {
    for (const [pattern, code] of PG_STATE_TABLE) if (pattern.test(sqlState)) return code;
    return 'DB_QUERY';
  }
  if (typeof err.number === 'number') return MSSQL_NUMBER_TABLE.get(err.number) ?? 'DB_QUERY';
  if (SOCKET_CODES.has(sqlState)) return 'DB_UNAVAILABLE';
  // pg's own messages for a lost session carry no SQLSTATE: the socket ended, or a pooled client whose connection
  // failed earlier (a terminated backend) refuses the next statement ("… is not queryable"). A new connection will do.
  if (/Connection terminated|connection closed|not queryable|timeout|ECONNREFUSED/i.test(err.message)) return 'DB_UNAVAILABLE';
  return 'DB_QUERY';
}

/** Kafka errors: kafkajs marks its own retriable errors; everything else is a rejection. */
export function classifyKafkaError(thrown: unknown, context: string): HighwaterError {
  if (thrown instanceof HighwaterError) return thrown;
  const err = coerceError(thrown) as Error & { retriable?: boolean; type?: string; code?: string };
  if (isKafkaAuthError(err)) return new HighwaterError('KAFKA_AUTH', `${context}: ${err.message}`, { cause: err });
  const unavailable = err.retriable === true || SOCKET_CODES.has(err.code ?? '') || /KafkaJSConnectionError|KafkaJSNumberOfRetriesExceeded|KafkaJSRequestTimeoutError/.test(err.name);
  return new HighwaterError(unavailable ? 'KAFKA_UNAVAILABLE' : 'KAFKA_REJECTED', `${context}: ${err.message}`, { cause: err });
}

// SASL failures: a wrong password, a mechanism the listener does not enable, or SASL against a plain listener.
const KAFKA_AUTH_TYPES = new Set(['SASL_AUTHENTICATION_FAILED', 'UNSUPPORTED_SASL_MECHANISM', 'ILLEGAL_SASL_STATE', 'CLUSTER_AUTHORIZATION_FAILED', 'TOPIC_AUTHORIZATION_FAILED', 'GROUP_AUTHORIZATION_FAILED']);

function isKafkaAuthError(err: Error & { type?: string }): boolean {
  return err.name === 'KafkaJSSASLAuthenticationError' || KAFKA_AUTH_TYPES.has(err.type ?? '');
}

/**
 * Classifies whatever reached the top of a command without a highwater code: a driver error that escaped its
 * module still gets the right hint (a kafkajs error names itself KafkaJS…; pg and mssql errors carry codes).
 */
export function classifyUnknownError(thrown: unknown): HighwaterError {
  if (thrown instanceof HighwaterError) return thrown;
  const err = coerceError(thrown) as Error & { code?: unknown; number?: unknown };
  if (err.name.startsWith('KafkaJS')) return classifyKafkaError(err, 'Kafka');
  if (typeof err.number === 'number' || (typeof err.code === 'string' && /^[0-9A-Z]{5}$/.test(err.code))) return classifyDbError(err, 'database');
  return new HighwaterError('INTERNAL', err.message, { cause: err });
}

export function isRetriable(thrown: unknown): boolean {
  return thrown instanceof HighwaterError && thrown.retriable;
}
