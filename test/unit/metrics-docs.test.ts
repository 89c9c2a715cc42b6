import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { parseConfigObject } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics/catalog.js';
import { Liveness } from '../../src/metrics/liveness.js';
import { metricsPortFor } from '../../src/metrics/port.js';
import { renderMetricsReference } from '../../src/metrics/reference.js';

const read = (path: string) => readFile(new URL(`../../${path}`, import.meta.url), 'utf8');
const declared = new Metrics({ processMetrics: false }).declared();

/** Series names an expression uses; a histogram's _bucket/_sum/_count name its base series. */
function seriesIn(text: string): string[] {
  return [...new Set(text.match(/\bhighwater_[a-z0-9_]+/g) ?? [])].map((name) => {
    const base = name.replace(/_(bucket|sum|count)$/, '');
    return declared.some((m) => m.name === base && m.type === 'histogram') ? base : name;
  });
}

describe('the metrics catalogue and what is built on it', () => {
  it('keeps docs/metrics.md in step with the catalogue', async () => {
    expect(await read('docs/metrics.md'), 'run `npm run docs:metrics`').toBe(renderMetricsReference());
  });

  it('the Grafana dashboard and the alert rules use only series that exist', async () => {
    const names = new Set(declared.map((m) => m.name));
    const dashboard = JSON.parse(await read('docs/grafana/highwater-dashboard.json')) as { panels: { targets: { expr: string }[] }[] };
    const panelExprs = dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr));
    const rules = (parseYaml(await read('docs/prometheus/highwater-alerts.yaml')) as { groups: { rules: { alert: string; expr: string }[] }[] }).groups.flatMap((g) => g.rules);
    for (const expr of [...panelExprs, ...rules.map((r) => r.expr)]) {
      const used = seriesIn(expr);
      expect(used.length, expr).toBeGreaterThan(0);
      for (const name of used) expect(names.has(name), `${name} (in ${expr}) is not in src/metrics/catalog.ts`).toBe(true);
    }
    // The series operators most need are on the dashboard.
    const onDashboard = new Set(panelExprs.flatMap(seriesIn));
    for (const name of ['highwater_consistent_as_of_seconds', 'highwater_consumer_lag_records', 'highwater_poll_seconds', 'highwater_dead_letters_total']) expect(onDashboard.has(name), name).toBe(true);
  });
});

describe('metrics port per role', () => {
  const raw = {
    controlStore: { database: 'db' },
    databases: [{ name: 'db', kind: 'postgres', connectionString: 'postgres://h/db' }],
  };
  it('is off by default, and per role when enabled, so poll --every and consume on one host do not collide', () => {
    expect(metricsPortFor('poll', parseConfigObject(raw, 't'), undefined, {})).toBeNull();
    const on = parseConfigObject({ ...raw, metrics: { enabled: true } }, 't');
    expect(metricsPortFor('poll', on, undefined, {})).toBe(9464);
    expect(metricsPortFor('consume', on, undefined, {})).toBe(9465);
    expect(metricsPortFor('run', on, undefined, {})).toBe(9466);
  });

  it('takes the flag, then HIGHWATER_METRICS_PORT, then metrics.port', () => {
    const one = parseConfigObject({ ...raw, metrics: { port: 9000 } }, 't');
    expect(metricsPortFor('consume', one, undefined, {})).toBe(9000);
    expect(metricsPortFor('consume', one, undefined, { HIGHWATER_METRICS_PORT: '9100' })).toBe(9100);
    expect(metricsPortFor('consume', one, 9200, { HIGHWATER_METRICS_PORT: '9100' })).toBe(9200);
    expect(() => metricsPortFor('consume', one, undefined, { HIGHWATER_METRICS_PORT: 'abc' })).toThrow(/HIGHWATER_METRICS_PORT must be a port number/);
  });
});

describe('liveness', () => {
  it('reports a loop that has made no progress within its limit, and recovers when it beats', () => {
    let now = 0;
    const live = new Liveness(() => now);
    live.expect('poller', 10_000);
    now = 9_000;
    expect(live.stale()).toEqual([]);
    now = 12_000;
    expect(live.stale()).toEqual([{ loop: 'poller', silentSeconds: 12, limitSeconds: 10 }]);
    live.beat('poller');
    expect(live.stale()).toEqual([]);
  });
});
