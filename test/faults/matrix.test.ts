/**
 * The whole fault matrix: `npm run test:faults`. Every scenario of test/faults/matrix.ts and the fast subset, with
 * repetitions and seeded random choices, against the broker the global setup starts and the local PostgreSQL (or
 * a private cluster, for the scenarios that stop the database). Prints a table (scenario, repetitions, result,
 * duplicates, recovery time, bound, seed) and fails on any violation of I1–I3 or I5.
 *
 * HIGHWATER_TEST_SEED replays a run; HIGHWATER_FAULTS_ONLY=<regexp of ids> runs a part; HIGHWATER_FAULTS_LONG=1
 * adds the 30 s and 120 s network faults.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { formatTable, runSeed, type ScenarioResult } from './harness.js';
import { COVERED_ELSEWHERE, faketimeStatus, matrix } from './matrix.js';
import { runScenario, type FaultEnv } from './scenarios.js';
import { brokers, canControlBroker, killBroker, startBroker, stopBroker } from '../support/kafka.js';
import { serverUrl } from '../support/pg.js';

const seed = runSeed();
const long = process.env.HIGHWATER_FAULTS_LONG === '1';
const results: ScenarioResult[] = [];
const startedAt = Date.now();

/**
 * Starts the broker again, trying up to three times: on a busy machine a restart can miss the setup's 60 s
 * readiness wait, and a broker left down would fail every scenario after this one.
 */
async function startBrokerPatiently(): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await startBroker();
      return;
    } catch (err) {
      if (attempt >= 3) throw err;
      console.log(`[faults] the broker did not come back (attempt ${attempt}): ${String(err)}; trying again`);
    }
  }
}

function env(): FaultEnv {
  return {
    pgServerUrl: serverUrl(),
    brokers: brokers(),
    broker: canControlBroker()
      ? { kill: async () => void (await killBroker('SIGKILL')), stop: async () => void (await stopBroker()), start: startBrokerPatiently }
      : null,
  };
}

console.log(`[faults] ${faketimeStatus()}`);

describe(`fault matrix, one broker (seed ${seed}; HIGHWATER_TEST_SEED=${seed} replays it)`, () => {
  afterAll(() => {
    const minutes = ((Date.now() - startedAt) / 60_000).toFixed(1);
    const elsewhere = COVERED_ELSEWHERE.map((c) => `  ${c.id}:\n${c.by.map((b) => `    ${b}`).join('\n')}`).join('\n');
    console.log(`[faults] matrix, seed ${seed}, ${minutes} min\n${formatTable(results)}\nNot fault injections, checked by other tests:\n${elsewhere}`);
  });

  for (const entry of matrix({ long })) {
    const needsBroker = /^R3-/.test(entry.def.id);
    // A scenario that cannot run here is a row of the table that says so and why, not a silent gap.
    if (entry.unavailable !== undefined) results.push({ scenario: `${entry.def.id} ${entry.def.title}`, repetitions: 0, passed: 0, duplicates: 0, recoveryMs: 0, boundMs: entry.def.boundMs, seed, notes: `SKIPPED: ${entry.unavailable}` });
    it.skipIf(entry.unavailable !== undefined || (needsBroker && !canControlBroker()))(`${entry.def.id}: ${entry.def.title}`, async () => {
      const result = await runScenario(env(), entry.def, seed, entry.repetitions);
      results.push(result);
      expect(result.failures, result.failures.join('\n')).toEqual([]);
    });
  }
});
