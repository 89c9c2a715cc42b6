import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { databaseUrlEnvName, parseConfigObject, parseConfigText, topicFor } from '../../src/config/load.js';
import { renderReference } from '../../src/config/reference.js';
import { ConfigError } from '../../src/errors.js';

const minimal = {
  controlStore: { database: 'ctl' },
  databases: [
    { name: 'ctl', kind: 'postgres', connectionString: 'postgres://u@h/db' },
    { name: 'legacy', kind: 'sqlserver', connectionString: 'Server=h;Password=x' },
  ],
  tables: [{ name: 'ReferralAttachment', source: 'legacy', blob: { table: 'ReferralAttachment' }, metadata: { table: 'cw_referralattachmentBase', joinColumn: 'cw_referralattachmentId' } }],
};

function issuesOf(raw: unknown): { path: string; message: string }[] {
  try {
    parseConfigObject(raw, 'test.yaml');
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).exitCode).toBe(2);
    return [...(err as ConfigError).issues];
  }
  throw new Error('expected the configuration to be rejected');
}

describe('configuration', () => {
  it('takes a consumer session timeout per target, 30 s by default, and refuses one below a second', () => {
    const withTarget = (extra: Record<string, unknown>) => ({ ...minimal, targets: [{ name: 'wh', database: 'ctl', ...extra }] });
    expect(parseConfigObject(withTarget({}), 'test.yaml').targets[0]!.sessionTimeoutMs).toBe(30_000);
    expect(parseConfigObject(withTarget({ sessionTimeoutMs: 8000 }), 'test.yaml').targets[0]!.sessionTimeoutMs).toBe(8000);
    expect(issuesOf(withTarget({ sessionTimeoutMs: 500 })).map((i) => i.path)).toContain('targets.0.sessionTimeoutMs');
  });

  it('fills every default the spec names', () => {
    const cfg = parseConfigObject(minimal, 'test.yaml');
    const t = cfg.tables[0]!;
    expect(t.safetyBufferMinutes).toBe(240);
    expect(t.batchSize).toBe(500);
    expect(t.enabled).toBe(true);
    expect(t.keyColumn).toBe('stream_id');
    expect(t.modifiedOnColumn).toBe('ModifiedOn');
    expect(t.blob.schema).toBe('dbo');
    expect(cfg.encoding.kind).toBe('single-object');
    expect(topicFor(cfg, t)).toBe('highwater.legacy.ReferralAttachment');
    expect(Object.isFrozen(cfg) && Object.isFrozen(cfg.tables[0])).toBe(true);
  });

  it('names each bad field by its path', () => {
    const issues = issuesOf({ ...minimal, tables: [{ ...minimal.tables[0], batchSize: -1, source: 'nowhere', keyColumn: 'x; DROP TABLE y' }] });
    const paths = issues.map((i) => i.path);
    expect(paths).toContain('tables.0.batchSize');
    expect(paths).toContain('tables.0.source');
    expect(paths).toContain('tables.0.keyColumn');
  });

  it('rejects references to unknown databases and tables, duplicates, and a non-PostgreSQL control store', () => {
    const paths = issuesOf({
      ...minimal,
      controlStore: { database: 'legacy' },
      databases: [...minimal.databases, { name: 'ctl', kind: 'postgres' }],
      targets: [{ name: 'wh', database: 'missing', tables: ['Nope'] }],
    }).map((i) => i.path);
    expect(paths).toEqual(expect.arrayContaining(['controlStore.database', 'databases.2.name', 'targets.0.database', 'targets.0.tables.0']));
  });

  it('requires a registry URL for the registry encoding', () => {
    expect(issuesOf({ ...minimal, encoding: { kind: 'registry' } }).map((i) => i.path)).toContain('encoding.registryUrl');
  });

  it('reports YAML syntax errors as configuration errors', () => {
    expect(() => parseConfigText('tables: [unclosed', 'bad.yaml')).toThrow(ConfigError);
  });

  it('lets the environment override brokers, registry and connection strings', () => {
    const cfg = parseConfigObject(minimal, 'test.yaml', {
      HIGHWATER_KAFKA_BROKERS: 'a:1, b:2',
      HIGHWATER_SCHEMA_REGISTRY_URL: 'http://registry:8081',
      [databaseUrlEnvName('legacy')]: 'Server=other;Password=y',
    });
    expect(cfg.kafka.brokers).toEqual(['a:1', 'b:2']);
    expect(cfg.encoding).toEqual({ kind: 'registry', registryUrl: 'http://registry:8081' });
    expect(cfg.databases.find((d) => d.name === 'legacy')?.connectionString).toBe('Server=other;Password=y');
    expect(databaseUrlEnvName('my-db.1')).toBe('HIGHWATER_DB_MY_DB_1_URL');
  });

  it('keeps docs/configuration.md in step with the schema', async () => {
    const current = await readFile(new URL('../../docs/configuration.md', import.meta.url), 'utf8');
    expect(current, 'run `npm run docs:config`').toBe(renderReference());
  });
});
