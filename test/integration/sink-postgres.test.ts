/**
 * The sink contract (test/contract/sink.ts) on PostgreSQL: every test owns a database (hw_t_sink_pg_…), dropped only
 * when it passed. The probes below are all this engine adds.
 */
import pg from 'pg';
import { onTestFinished } from 'vitest';
import { PostgresWriter } from '../../consumers/postgres/writer.js';
import { sinkContract, TABLE, type SinkUnderTest } from '../contract/sink.js';
import { createTestDatabase, dropWhenPassed } from '../support/pg.js';

const T = 'tgt.referral_attachment';

sinkContract({
  engine: 'PostgreSQL',
  skip: null,
  async fresh(label): Promise<SinkUnderTest> {
    const db = await createTestDatabase(`sink pg ${label}`);
    dropWhenPassed(db);
    const writer = new PostgresWriter(new pg.Pool({ connectionString: db.url, max: 2 }), { schema: 'tgt', tables: [{ name: TABLE }] });
    onTestFinished(() => writer.close());
    await writer.migrate();
    const sql = db.pool();
    const rows = async (text: string, values: unknown[] = []) => (await sql.query(text, values)).rows as Record<string, unknown>[];
    return {
      writer,
      held: async (key) =>
        (
          await rows(
            `SELECT modified_on_ticks::text AS ticks, encode(content_sha256, 'hex') AS sha FROM ${T} WHERE tenant = '' AND key = $1`,
            [key],
          )
        )[0] as { ticks: string; sha: string | null } | undefined,
      content: async (key) =>
        (await rows(`SELECT encode(sha256(content), 'hex') AS sha, length(content) AS len FROM ${T} WHERE key = $1`, [key]))[0] as
          { sha: string; len: number } | undefined,
      count: async (table) => Number((await rows(`SELECT count(*)::int AS n FROM tgt.${table}`))[0]!.n),
      keys: async () => (await rows(`SELECT key FROM ${T} ORDER BY key COLLATE "C"`)).map((r) => String(r.key)),
      refuseKey: async (key) => {
        await sql.query(`
          CREATE FUNCTION tgt.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN
            IF NEW.key = '${key}' THEN RAISE EXCEPTION '${key} refused'; END IF;
            RETURN NEW;
          END $$;
          CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON ${T} FOR EACH ROW EXECUTE FUNCTION tgt.refuse();`);
      },
      forbidName: async (name) => {
        await sql.query(`ALTER TABLE ${T} ADD CONSTRAINT forbidden_name CHECK (name <> '${name}')`);
      },
      audit: async () => {
        await sql.query(`
          CREATE TABLE tgt.audit (key text, old_ticks bigint, new_ticks bigint);
          CREATE FUNCTION tgt.audit_update() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN
            INSERT INTO tgt.audit VALUES (NEW.key, OLD.modified_on_ticks, NEW.modified_on_ticks);
            RETURN NEW;
          END $$;
          CREATE TRIGGER audit_update AFTER UPDATE ON ${T} FOR EACH ROW EXECUTE FUNCTION tgt.audit_update();`);
        const count = async (where: string) => Number((await rows(`SELECT count(*) AS n FROM tgt.audit WHERE ${where}`))[0]!.n);
        return { updates: () => count('true'), regressions: () => count('new_ticks < old_ticks') };
      },
      recordForeignMigration: async (name) => {
        await sql.query(`INSERT INTO tgt.hw_migrations (name, sha256) VALUES ($1, $2)`, [name, '0'.repeat(64)]);
      },
    };
  },
});
