import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { databaseUrlEnvName, parseConfigObject, parseConfigText, topicFor } from '../../src/config/load.js';
import { renderReference } from '../../src/config/reference.js';
import { renderJsonSchema } from '../../src/config/json-schema.js';
import { applyMode, connectionStringProblem, fetchLimits, FETCH_TOGETHER_PARTITIONS, FETCH_TOGETHER_WIDTH } from '../../src/config/schema.js';
import { parse as parseYaml } from 'yaml';
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

  it('applies a fetch\'s partitions together by default, that many apart when asked, and refuses more than the pool leaves room for', () => {
    const withTarget = (poolSize: number, extra: Record<string, unknown>) => ({
      ...minimal,
      databases: [{ ...minimal.databases[0]!, poolSize }, minimal.databases[1]!],
      targets: [{ name: 'wh', database: 'ctl', ...extra }],
    });
    const effective = (poolSize: number, extra: Record<string, unknown> = {}) => {
      const cfg = parseConfigObject(withTarget(poolSize, extra), 'test.yaml');
      return applyMode(cfg.targets[0]!.partitionsConsumedConcurrently);
    };
    // Unset: a fetch's partitions together, kafkajs handing out the whole fetch at once, whatever the pool.
    expect(effective(4)).toEqual({ together: true, kafkaConcurrency: FETCH_TOGETHER_WIDTH });
    expect(effective(1)).toEqual({ together: true, kafkaConcurrency: FETCH_TOGETHER_WIDTH });
    expect(effective(4, { partitionsConsumedConcurrently: 3 })).toEqual({ together: false, kafkaConcurrency: 3 });
    expect(effective(3, { partitionsConsumedConcurrently: 2 })).toEqual({ together: false, kafkaConcurrency: 2 });
    expect(effective(10, { partitionsConsumedConcurrently: 8 })).toEqual({ together: false, kafkaConcurrency: 8 });
    expect(effective(1, { partitionsConsumedConcurrently: 1 })).toEqual({ together: false, kafkaConcurrency: 1 });
    const tooMany = issuesOf(withTarget(4, { partitionsConsumedConcurrently: 4 }));
    expect(tooMany.map((i) => i.path)).toContain('targets.0.partitionsConsumedConcurrently');
    expect(tooMany.map((i) => i.message).join('\n')).toContain('poolSize 4: at most 3');
    expect(issuesOf(withTarget(4, { partitionsConsumedConcurrently: 0 })).map((i) => i.path)).toContain('targets.0.partitionsConsumedConcurrently');
  });

  it('bounds the bytes a fetch takes from one partition, 8 MiB unless set', () => {
    const withTarget = (extra: Record<string, unknown>) => ({ ...minimal, targets: [{ name: 'wh', database: 'ctl', ...extra }] });
    expect(parseConfigObject(withTarget({}), 'test.yaml').targets[0]!.fetchMaxBytesPerPartition).toBe(8 * 1024 * 1024);
    expect(parseConfigObject(withTarget({ fetchMaxBytesPerPartition: 1048576 }), 'test.yaml').targets[0]!.fetchMaxBytesPerPartition).toBe(1048576);
    for (const bad of [1000, 128 * 1024 * 1024, 1.5e6 + 0.5])
      expect(issuesOf(withTarget({ fetchMaxBytesPerPartition: bad })).map((i) => i.path)).toContain('targets.0.fetchMaxBytesPerPartition');
  });

  it('lets a fetch applied together take several partitions\' worth, so a table\'s six partitions come in one fetch', () => {
    const limits = (extra: Record<string, unknown>) => fetchLimits(parseConfigObject({ ...minimal, targets: [{ name: 'wh', database: 'ctl', ...extra }] }, 'test.yaml').targets[0]!);
    expect(FETCH_TOGETHER_PARTITIONS).toBeGreaterThanOrEqual(6);
    expect(limits({})).toEqual({ maxBytesPerPartition: 8 << 20, maxBytes: FETCH_TOGETHER_PARTITIONS * (8 << 20) });
    expect(limits({ fetchMaxBytesPerPartition: 1 << 20 })).toEqual({ maxBytesPerPartition: 1 << 20, maxBytes: FETCH_TOGETHER_PARTITIONS << 20 });
    // One transaction per partition: kafkajs' own 10 MiB for the whole fetch, as before.
    expect(limits({ partitionsConsumedConcurrently: 2 })).toEqual({ maxBytesPerPartition: 8 << 20, maxBytes: undefined });
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

  it('keeps schema/highwater-config.schema.json in step with the schema', async () => {
    const current = await readFile(new URL('../../schema/highwater-config.schema.json', import.meta.url), 'utf8');
    expect(current, 'run `npm run docs:config`').toBe(renderJsonSchema());
  });
});

describe('strict configuration', () => {
  it('rejects a misspelled key by name, with the option it probably meant', () => {
    const issues = issuesOf({ ...minimal, tables: [{ ...minimal.tables[0], safetyBuferMinutes: 5 }] });
    expect(issues).toEqual([{ path: 'tables.0.safetyBuferMinutes', message: 'unknown option "safetyBuferMinutes"; did you mean "safetyBufferMinutes"?' }]);
  });

  it('rejects unknown keys at every depth: root, nested objects with defaults, array items, extended objects', () => {
    const issues = issuesOf({
      ...minimal,
      polll: {},
      kafka: { brokers: ['a:1'], connectionTimeout: 5 },
      poll: { intervalSecond: 5 },
      databases: [{ ...minimal.databases[0], pool: 3 }, minimal.databases[1]],
      tables: [{ ...minimal.tables[0], metadata: { ...minimal.tables[0]!.metadata, joincolumn: 'x' } }],
    });
    const byPath = Object.fromEntries(issues.map((i) => [i.path, i.message]));
    expect(byPath['polll']).toContain('did you mean "poll"?');
    expect(byPath['kafka.connectionTimeout']).toContain('did you mean "connectionTimeoutMs"?');
    expect(byPath['poll.intervalSecond']).toContain('did you mean "intervalSeconds"?');
    expect(byPath['databases.0.pool']).toMatch(/unknown option "pool"/);
    expect(byPath['tables.0.metadata.joincolumn']).toContain('did you mean "joinColumn"?');
  });

  it('lists the known options when nothing is close', () => {
    const [issue] = issuesOf({ ...minimal, log: { verbosity: 'x' } });
    expect(issue).toEqual({ path: 'log.verbosity', message: 'unknown option "verbosity"; known options here: level' });
  });

  it('catches a connection string of the wrong engine at validation, without quoting it', () => {
    const issues = issuesOf({ ...minimal, databases: [{ name: 'ctl', kind: 'postgres', connectionString: 'Server=h,1433;Database=d;User Id=sa;Password=Secret1!' }, { ...minimal.databases[1], connectionString: 'postgres://u:pw@h/db' }] });
    expect(issues.map((i) => i.path)).toEqual(['databases.0.connectionString', 'databases.1.connectionString']);
    expect(issues[0]!.message).toMatch(/looks like an SQL Server connection string.*kind is postgres/);
    expect(issues[1]!.message).toMatch(/looks like a PostgreSQL URL.*kind is sqlserver/);
    expect(JSON.stringify(issues)).not.toMatch(/Secret1|pw@/);
  });

  it('accepts each connection-string form the drivers accept for their engine', () => {
    for (const s of ['postgres://u:p@h:5432/db', 'postgresql://h/db?sslmode=require', 'socket:/var/run/postgresql?db=x', '/var/run/postgresql db']) expect(connectionStringProblem('postgres', s), s).toBeUndefined();
    for (const s of ['Server=h,1433;Database=d;User Id=sa;Password=x;', 'server=h;user=u;password="a;b"', 'mssql://u:p@h:1433/db', 'sqlserver://h/db']) expect(connectionStringProblem('sqlserver', s), s).toBeUndefined();
    expect(connectionStringProblem('postgres', 'mysql://h/db')).toMatch(/is not a PostgreSQL URL/);
    expect(connectionStringProblem('sqlserver', 'just-a-host')).toMatch(/neither/);
  });

  it('validates the shipped example with the generated JSON Schema, and the schema rejects the same typo', async () => {
    const Ajv2020 = (await import('ajv/dist/2020.js')).default.default;
    const validate = new Ajv2020({ allErrors: true, strict: false }).compile(JSON.parse(renderJsonSchema()));
    const example = parseYaml(await readFile(new URL('../../docs/examples/highwater.yaml', import.meta.url), 'utf8'));
    expect(validate(example), JSON.stringify(validate.errors)).toBe(true);
    // The JSON Schema cannot express the cross-field rules; the zod schema must accept the example too.
    expect(() => parseConfigObject(example, 'docs/examples/highwater.yaml')).not.toThrow();
    expect(validate({ ...minimal, tables: [{ ...minimal.tables[0], safetyBuferMinutes: 5 }] })).toBe(false);
    expect(validate.errors).toEqual(expect.arrayContaining([expect.objectContaining({ keyword: 'additionalProperties', params: { additionalProperty: 'safetyBuferMinutes' } })]));
  });
});
