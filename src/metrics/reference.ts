import { generatedFileCli } from '../generated-file.js';
import { pathToFileURL } from 'node:url';
import { Metrics } from './catalog.js';

/**
 * Renders docs/metrics.md from the catalogue (src/metrics/catalog.ts), as docs/configuration.md is rendered from
 * the configuration schema: `npm run docs:metrics` rewrites it and a unit test fails when it is stale.
 */

const HEADER = `# Metrics reference

Generated from \`src/metrics/catalog.ts\` by \`npm run docs:metrics\`; do not edit by hand (a unit test checks it is current).

\`poll --every\`, \`consume\` and \`run\` serve \`/metrics\` (Prometheus text), \`/healthz\` and \`/readyz\` when metrics are on
(\`metrics.enabled\`, \`metrics.port\`, \`HIGHWATER_METRICS_PORT\` or \`--metrics-port\`). Each role has its own default port
(\`metrics.ports\`: poll 9464, consume 9465, run 9466), so a poller and a consumer on one host never collide; the flag
and the environment variable pick another port for one process, and a port already in use fails at start with a line
that says so (exit 2).

- \`/healthz\` answers 503 when a loop has made no progress within its limit (the poll loop: \`poll.intervalSeconds\` +
  \`poll.leaseSeconds\`), naming it; \`highwater_loop_stale\` says the same as a series.
- \`/readyz\` answers 503 when Kafka or a configured database does not answer within 5 s, naming them.
- Process and Node.js series from prom-client (\`highwater_process_*\`, \`highwater_nodejs_*\`) are exposed too.

A Grafana dashboard (\`docs/grafana/highwater-dashboard.json\`) and Prometheus alert rules
(\`docs/prometheus/highwater-alerts.yaml\`) ship with the docs; a unit test checks that every series they use is here.

| series | type | labels | description |
| --- | --- | --- | --- |
`;

export function renderMetricsReference(): string {
  const rows = new Metrics({ processMetrics: false }).declared()
    .map((m) => `| \`${m.name}\` | ${m.type} | ${m.labels.map((l) => `\`${l}\``).join(', ') || '—'} | ${m.help.replace(/\|/g, '\\|')} |`);
  return `${HEADER}${rows.join('\n')}\n`;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  process.exitCode = await generatedFileCli(process.argv.slice(2), { render: renderMetricsReference, file: 'docs/metrics.md', command: 'npm run docs:metrics' });
}
