import { defineConfig } from 'vitest/config';

// Two projects: `unit` is pure logic with no I/O and runs in parallel; `integration` talks to a real
// Kafka broker (started once per run by the global setup) and the local PostgreSQL, one file at a time
// because the machine has two cores and a single broker.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          environment: 'node',
        },
      },
      {
        // The whole fault matrix (npm run test:faults): long, so it is not part of npm test; the fast subset is.
        test: {
          name: 'faults',
          include: ['test/faults/**/*.test.ts'],
          environment: 'node',
          globalSetup: ['test/support/global-setup.ts'],
          fileParallelism: false,
          testTimeout: 3_600_000,
          hookTimeout: 300_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          environment: 'node',
          globalSetup: ['test/support/global-setup.ts'],
          fileParallelism: false,
          testTimeout: 180_000,
          hookTimeout: 180_000,
        },
      },
    ],
  },
});
