/**
 * Regression (found by the fault matrix, R5): a PostgreSQL session ended by the server while its client was checked
 * out of the pool between two statements (pg_terminate_backend, a restart, a network reset) made the poller and the
 * consumer exit: pg reports that error on the client, not on the pool, and an 'error' event nobody listens to kills
 * the process. The pools highwater creates must survive it; the next statement on that client fails and is
 * classified like any lost connection, and the pool replaces the client.
 */
import pg from 'pg';
import { describe, expect, it, onTestFinished } from 'vitest';
import { createPgPool } from '../../connectors/postgres/source.js';
import { serverUrl } from '../support/pg.js';

describe('pools survive sessions ended under a checked-out client', () => {
  it('a terminated session between two statements of a transaction fails that transaction, not the process', async () => {
    const pool = createPgPool(serverUrl(), 2);
    pool.on('error', () => undefined);
    onTestFinished(() => pool.end());
    const admin = new pg.Client({ connectionString: serverUrl() });
    await admin.connect();
    onTestFinished(() => admin.end());

    const client = await pool.connect();
    let released = false;
    onTestFinished(() => void (released || client.release(true)));
    await client.query('BEGIN');
    const { rows: [me] } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    const unheard: unknown[] = [];
    const onUncaught = (err: unknown) => unheard.push(err);
    process.on('uncaughtException', onUncaught);
    onTestFinished(() => void process.off('uncaughtException', onUncaught));
    await admin.query('SELECT pg_terminate_backend($1)', [me!.pid]);
    // The server's FATAL message and the socket's end reach the idle client asynchronously.
    await new Promise((r) => setTimeout(r, 500));

    await expect(client.query('SELECT 1')).rejects.toThrow();
    client.release(new Error('session ended'));
    released = true;
    expect(unheard).toEqual([]);
    expect((await pool.query<{ one: number }>('SELECT 1 AS one')).rows[0]!.one).toBe(1);
  });
});
