/**
 * A fresh PostgreSQL database per test. A test that passed drops its database; one that failed leaves it in place,
 * named after the test, so its tables can be inspected with psql afterwards.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject, onTestFinished } from 'vitest';
import { quotePg } from '../../src/sql/ident.js';

const PREFIX = 'hw_t_';
// PostgreSQL truncates identifiers to 63 bytes; prefix, test name, `_` and 8 random hex digits must fit.
const MAX_IDENTIFIER = 63;
const RANDOM_HEX = 8;

export interface TestDatabase {
  readonly name: string;
  readonly url: string;
  /** One pool per database, created on first use and closed by `close()`/`drop()`. */
  pool(): pg.Pool;
  /** Closes the pool and keeps the database. */
  close(): Promise<void>;
  /** Closes the pool and drops the database, even if something is still connected to it. */
  drop(): Promise<void>;
}

/** The server the tests may create databases on (HIGHWATER_TEST_PG_URL, checked by the global setup). */
export function serverUrl(): string {
  return inject('pgUrl');
}

export async function createTestDatabase(testName: string): Promise<TestDatabase> {
  const name = testDatabaseName(testName);
  await onServer(`CREATE DATABASE ${quotePg(name)}`);
  const url = databaseUrl(serverUrl(), name);
  let pool: pg.Pool | undefined;
  const close = async (): Promise<void> => {
    const open = pool;
    pool = undefined;
    await open?.end();
  };
  return {
    name,
    url,
    pool: () => (pool ??= quietPool(url)),
    close,
    drop: async () => {
      await close();
      await onServer(`DROP DATABASE IF EXISTS ${quotePg(name)} WITH (FORCE)`);
    },
  };
}

/**
 * A pool whose idle-connection errors are swallowed: `pool.end()` resolves before its sessions are gone, so the
 * `DROP DATABASE … WITH (FORCE)` after a passed test terminates them (57P01), which must not fail the run.
 */
function quietPool(url: string): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max: 5 });
  pool.on('error', () => undefined);
  return pool;
}

/**
 * Drops the database when the current test passes and only closes its pool when it fails. Call it inside the test
 * right after `createTestDatabase`.
 */
export function dropWhenPassed(db: TestDatabase): void {
  onTestFinished(async ({ task }) => {
    if (task.result?.state === 'pass') {
      await db.drop();
      return;
    }
    await db.close();
    console.log(`[highwater] kept database ${db.name} of the failed test "${task.name}"`);
  });
}

/** `hw_t_<test name in lower-case letters, digits and _>_<8 random hex digits>`, at most 63 characters. */
export function testDatabaseName(testName: string): string {
  const room = MAX_IDENTIFIER - PREFIX.length - 1 - RANDOM_HEX;
  const sanitised = testName.toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_+|_+$/g, '').slice(0, room).replace(/_+$/, '');
  return `${PREFIX}${sanitised === '' ? 'test' : sanitised}_${randomBytes(RANDOM_HEX / 2).toString('hex')}`;
}

function databaseUrl(server: string, database: string): string {
  const url = new URL(server);
  url.pathname = `/${database}`;
  return url.toString();
}

/** CREATE/DROP DATABASE cannot run in a transaction or a pool's session state, so each gets its own connection. */
async function onServer(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: serverUrl() });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}
