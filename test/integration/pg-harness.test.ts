/** Proves the per-test database helper: each test gets a fresh, empty database of its own, dropped when it passes. */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { createTestDatabase, dropWhenPassed, serverUrl, testDatabaseName } from '../support/pg.js';

async function databaseExists(name: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: serverUrl() });
  await client.connect();
  try {
    const result = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    return result.rowCount === 1;
  } finally {
    await client.end();
  }
}

describe('test databases', () => {
  // Names of the databases the previous test asked to drop on success; the test after it checks they are gone.
  const droppedOnPass: string[] = [];

  it('names a database after the test, within PostgreSQL limits', () => {
    const name = testDatabaseName('Kafka → PG: "latest wins" under a very long test name that goes on and on and on');
    expect(name).toMatch(/^hw_t_[a-z0-9_]+_[0-9a-f]{8}$/);
    expect(name.length).toBeLessThanOrEqual(63);
    expect(name).not.toBe(testDatabaseName('Kafka → PG: "latest wins" under a very long test name that goes on and on and on'));
  });

  it('creates, uses and drops a fresh database', async ({ task }) => {
    const db = await createTestDatabase(task.name);
    expect(await databaseExists(db.name)).toBe(true);

    const pool = db.pool();
    expect((await pool.query<{ db: string }>('SELECT current_database() AS db')).rows[0]!.db).toBe(db.name);
    const tables = await pool.query("SELECT 1 FROM information_schema.tables WHERE table_schema = 'public'");
    expect(tables.rowCount).toBe(0);
    await pool.query('CREATE TABLE blobs (id int PRIMARY KEY, body bytea NOT NULL)');
    await pool.query('INSERT INTO blobs VALUES ($1, $2)', [1, Buffer.from('hello')]);
    expect((await pool.query<{ body: Buffer }>('SELECT body FROM blobs WHERE id = 1')).rows[0]!.body.toString()).toBe('hello');
    expect(db.pool()).toBe(pool);

    // A connection left open (as a crashed consumer would) must not prevent the drop.
    const straggler = new pg.Client({ connectionString: db.url });
    await straggler.connect();
    straggler.on('error', () => {
      // The forced drop terminates this connection; that is the point of the test, not a failure.
    });
    await db.drop();
    expect(await databaseExists(db.name)).toBe(false);
    await straggler.end();
  });

  it('gives each test its own database, dropped when the test passes', async ({ task }) => {
    const first = await createTestDatabase(task.name);
    const second = await createTestDatabase(task.name);
    dropWhenPassed(first);
    dropWhenPassed(second);
    droppedOnPass.push(first.name, second.name);

    expect(first.name).not.toBe(second.name);
    await first.pool().query('CREATE TABLE only_in_first (id int)');
    const seen = await second.pool().query("SELECT 1 FROM information_schema.tables WHERE table_name = 'only_in_first'");
    expect(seen.rowCount).toBe(0);
  });

  it('has dropped the databases of the test that passed before', async () => {
    expect(droppedOnPass).toHaveLength(2);
    for (const name of droppedOnPass) expect(await databaseExists(name)).toBe(false);
  });
});
