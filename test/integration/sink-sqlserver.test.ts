/**
 * The sink contract (test/contract/sink.ts) on SQL Server, when one is reachable through HIGHWATER_TEST_MSSQL_URL
 * (an mssql:// URL of a login that may create databases); skipped with a message otherwise. Every test owns a
 * database (hw_t_sink_mssql_…), dropped only when it passed. The probes below are all this engine adds.
 */
import { randomBytes } from 'node:crypto';
import sql from 'mssql';
import { onTestFinished } from 'vitest';
import { SqlServerWriter } from '../../consumers/sqlserver/writer.js';
import { mssqlConfig } from '../../src/db/sqlserver.js';
import { quoteMssql } from '../../src/sql/ident.js';
import { sinkContract, TABLE, type SinkUnderTest } from '../contract/sink.js';

const URL_ENV = 'HIGHWATER_TEST_MSSQL_URL';
const serverUrl = process.env[URL_ENV] ?? '';
const T = 'tgt.[referral_attachment]';

async function connect(database?: string, max = 2): Promise<sql.ConnectionPool> {
  return new sql.ConnectionPool({ ...mssqlConfig(serverUrl), ...(database ? { database } : {}), pool: { max } }).connect();
}

async function exec(pool: sql.ConnectionPool, text: string, inputs: Record<string, string> = {}): Promise<Record<string, unknown>[]> {
  const request = new sql.Request(pool);
  for (const [name, value] of Object.entries(inputs)) request.input(name, sql.NVarChar(450), value);
  const result = Object.keys(inputs).length === 0 ? await request.batch(text) : await request.query(text);
  return (result.recordset ?? []) as Record<string, unknown>[];
}

/** A database of its own, dropped when the test passed. */
async function freshDatabase(label: string): Promise<{ name: string; pool: sql.ConnectionPool }> {
  const name = `hw_t_sink_mssql_${label
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .slice(0, 60)}_${randomBytes(4).toString('hex')}`;
  const master = await connect(undefined, 1);
  try {
    await exec(master, `CREATE DATABASE ${quoteMssql(name)}`);
  } finally {
    await master.close();
  }
  const pool = await connect(name);
  onTestFinished(async ({ task }) => {
    await pool.close();
    if (task.result?.state !== 'pass') return;
    const m = await connect(undefined, 1);
    try {
      await exec(m, `ALTER DATABASE ${quoteMssql(name)} SET SINGLE_USER WITH ROLLBACK IMMEDIATE; DROP DATABASE ${quoteMssql(name)};`);
    } finally {
      await m.close();
    }
  });
  return { name, pool };
}

sinkContract({
  engine: 'SQL Server',
  skip: serverUrl === '' ? `${URL_ENV} is not set (test/integration/sqlserver.test.ts says how to get a server)` : null,
  async fresh(label): Promise<SinkUnderTest> {
    const db = await freshDatabase(label);
    const writer = new SqlServerWriter(await connect(db.name), { schema: 'tgt', tables: [{ name: TABLE }] });
    onTestFinished(() => writer.close());
    await writer.migrate();
    const rows = (text: string, inputs: Record<string, string> = {}) => exec(db.pool, text, inputs);
    return {
      writer,
      held: async (key) =>
        (
          await rows(
            `SELECT CONVERT(varchar(20), modified_on_ticks) AS ticks, LOWER(CONVERT(varchar(64), content_sha256, 2)) AS sha FROM ${T} WHERE [tenant] = N'' AND [key] = @key`,
            { key },
          )
        )[0] as { ticks: string; sha: string | null } | undefined,
      content: async (key) => {
        const [row] = await rows(
          `SELECT LOWER(CONVERT(varchar(64), HASHBYTES('SHA2_256', content), 2)) AS sha, DATALENGTH(content) AS len FROM ${T} WHERE [key] = @key`,
          { key },
        );
        return row === undefined ? undefined : { sha: String(row.sha), len: Number(row.len) };
      },
      count: async (table) => Number((await rows(`SELECT COUNT(*) AS n FROM tgt.${quoteMssql(table)}`))[0]!.n),
      keys: async () => (await rows(`SELECT [key] FROM ${T} ORDER BY [key]`)).map((r) => String(r.key)),
      refuseKey: async (key) => {
        await rows(`CREATE TRIGGER tgt.refuse ON ${T} AFTER INSERT, UPDATE AS
          IF EXISTS (SELECT 1 FROM inserted WHERE [key] = N'${key}') THROW 50001, '${key} refused', 1;`);
      },
      forbidName: async (name) => {
        await rows(`ALTER TABLE ${T} ADD CONSTRAINT forbidden_name CHECK ([name] <> N'${name}')`);
      },
      audit: async () => {
        await rows(`CREATE TABLE tgt.audit ([key] nvarchar(450), old_ticks bigint, new_ticks bigint);`);
        await rows(`CREATE TRIGGER tgt.audit_update ON ${T} AFTER UPDATE AS
          INSERT INTO tgt.audit SELECT i.[key], d.modified_on_ticks, i.modified_on_ticks FROM inserted AS i JOIN deleted AS d ON d.[tenant] = i.[tenant] AND d.[key] = i.[key];`);
        const count = async (where: string) => Number((await rows(`SELECT COUNT(*) AS n FROM tgt.audit WHERE ${where}`))[0]!.n);
        return { updates: () => count('1 = 1'), regressions: () => count('new_ticks < old_ticks') };
      },
      recordForeignMigration: async (name) => {
        await rows(`INSERT INTO tgt.[hw_migrations] (name, sha256) VALUES (@name, REPLICATE('0', 64))`, { name });
      },
    };
  },
});
