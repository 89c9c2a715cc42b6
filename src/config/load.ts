import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../errors.js';
import { knownKeysAt, unknownKeyMessage } from './suggest.js';
import { configSchema, type Config, type DatabaseConfig, type TableConfig, type TargetConfig } from './schema.js';

/**
 * Loading order (later wins): the YAML file, then environment variables for connection strings and secrets.
 * Flags are applied by the CLI on top of the loaded object. The result is validated once and frozen.
 */

export type Env = Readonly<Record<string, string | undefined>>;

export async function loadConfigFile(path: string, env: Env = process.env): Promise<Config> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError(path, [{ path: '', message: `cannot read the file (${(err as Error).message})` }]);
  }
  return parseConfigText(text, path, env);
}

export function parseConfigText(text: string, source: string, env: Env = {}): Config {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new ConfigError(source, [{ path: '', message: `not valid YAML: ${(err as Error).message}` }]);
  }
  return parseConfigObject(raw ?? {}, source, env);
}

export function parseConfigObject(raw: unknown, source: string, env: Env = {}): Config {
  const result = configSchema.safeParse(applyEnvOverrides(raw, env));
  if (!result.success) throw new ConfigError(source, formatIssues(result.error.issues));
  return deepFreeze(result.data);
}

function formatIssues(issues: readonly z.core.$ZodIssue[]): { path: string; message: string }[] {
  return issues.flatMap((i) => {
    // Every object is strict: each unknown key becomes an issue of its own, at its own path, with a suggestion.
    if (i.code === 'unrecognized_keys') {
      const known = knownKeysAt(configSchema, i.path);
      return i.keys.map((key) => ({ path: [...i.path, key].map(String).join('.'), message: unknownKeyMessage(key, known) }));
    }
    return [{ path: i.path.map(String).join('.'), message: i.message }];
  });
}

/** The environment variable that overrides a database's connection string. */
export function databaseUrlEnvName(dbName: string): string {
  return `HIGHWATER_DB_${dbName.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_URL`;
}

function applyEnvOverrides(raw: unknown, env: Env): unknown {
  if (!isRecord(raw)) return raw;
  const out: Record<string, unknown> = { ...raw };
  const kafka: Record<string, unknown> = isRecord(out.kafka) ? { ...out.kafka } : {};
  if (env.HIGHWATER_KAFKA_BROKERS) kafka.brokers = env.HIGHWATER_KAFKA_BROKERS.split(',').map((b) => b.trim()).filter(Boolean);
  if (isRecord(kafka.sasl) && (env.HIGHWATER_KAFKA_USERNAME || env.HIGHWATER_KAFKA_PASSWORD)) {
    kafka.sasl = { ...kafka.sasl, ...(env.HIGHWATER_KAFKA_USERNAME ? { username: env.HIGHWATER_KAFKA_USERNAME } : {}), ...(env.HIGHWATER_KAFKA_PASSWORD ? { password: env.HIGHWATER_KAFKA_PASSWORD } : {}) };
  }
  if (Object.keys(kafka).length > 0 || out.kafka !== undefined) out.kafka = kafka;
  if (env.HIGHWATER_SCHEMA_REGISTRY_URL) {
    out.encoding = { ...(isRecord(out.encoding) ? out.encoding : {}), kind: 'registry', registryUrl: env.HIGHWATER_SCHEMA_REGISTRY_URL };
  }
  if (env.HIGHWATER_LOG_LEVEL) out.log = { ...(isRecord(out.log) ? out.log : {}), level: env.HIGHWATER_LOG_LEVEL };
  if (Array.isArray(out.databases)) {
    out.databases = out.databases.map((db) => {
      if (!isRecord(db) || typeof db.name !== 'string') return db;
      const url = env[databaseUrlEnvName(db.name)];
      return url ? { ...db, connectionString: url } : db;
    });
  }
  return out;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/* Derived names, computed in one place so every component agrees. */

export function topicFor(cfg: Config, table: TableConfig): string {
  return table.topic ?? `highwater.${table.source}.${table.name}`;
}

export function groupIdFor(target: TargetConfig): string {
  return target.groupId ?? `highwater.${target.name}`;
}

export function retryTopicFor(topic: string): string {
  return `${topic}.retry`;
}

export function dlqTopicFor(topic: string): string {
  return `${topic}.dlq`;
}

/** The request topic on which consumers ask the poller side to back-fill rows (missing parents). */
export function backfillTopic(): string {
  return 'highwater.backfill-requests';
}

export function databaseByName(cfg: Config, dbName: string): DatabaseConfig {
  const db = cfg.databases.find((d) => d.name === dbName);
  if (!db) throw new ConfigError('configuration', [{ path: 'databases', message: `no database named ${JSON.stringify(dbName)}` }]);
  return db;
}

export function connectionStringOf(db: DatabaseConfig): string {
  if (!db.connectionString) {
    throw new ConfigError('configuration', [{ path: `databases.${db.name}.connectionString`, message: `missing; set it in the file or in ${databaseUrlEnvName(db.name)}` }]);
  }
  return db.connectionString;
}

export function tablesForTarget(cfg: Config, target: TargetConfig): TableConfig[] {
  return cfg.tables.filter((t) => !target.tables || target.tables.includes(t.name));
}

export function tenantOf(cfg: Config, table: TableConfig): string {
  return databaseByName(cfg, table.source).tenant;
}
