/**
 * The fault matrix on a three-node KRaft cluster (replication factor 3, min.insync.replicas 2), part of
 * `npm run test:faults`: the leader of a partition is killed during a load (nothing acknowledged may be lost),
 * three consumer instances share the partitions while instances join and leave, and two poller processes run on
 * one table under its lease. Prints its own table.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatTable, runSeed, SMALL_LOAD, type Pipeline, type ScenarioResult } from './harness.js';
import { runScenario, timedFault, type FaultEnv, type Injection, type ScenarioDef } from './scenarios.js';
import { startKafkaCluster, type KafkaCluster } from '../support/kafka-cluster.js';
import { serverUrl } from '../support/pg.js';

const seed = runSeed();
const results: ScenarioResult[] = [];
let cluster: KafkaCluster;

function env(): FaultEnv {
  return { pgServerUrl: serverUrl(), brokers: cluster.brokers, broker: null, replicationFactor: 3 };
}

/** SIGKILL of the node leading partition 0 of the table topic, restarted after 10 s. */
const leaderKill: ScenarioDef = {
  id: 'C1-leader-kill', title: 'SIGKILL the leader of partition 0 during the load, restart after 10 s', boundMs: 150_000,
  pipeline: { sessionTimeoutMs: 10_000 },
  inject: () => {
    let killed = 0;
    const fault = timedFault(async (p: Pipeline) => {
      killed = await cluster.leaderOf(p.topic, 0);
      cluster.node(killed).kill('SIGKILL');
    }, async () => cluster.node(killed).restart(), 10_000, '');
    return { ...fault, notes: () => `node ${killed} (leader of partition 0) killed for 10 s` };
  },
};

/** Three instances; one leaves (SIGTERM) or a new one joins at every step of the load. */
const threeConsumers: ScenarioDef = {
  id: 'C2-consumer-churn', title: 'three consumers share the partitions while instances join and leave', boundMs: 150_000,
  pipeline: { consumers: 3, sessionTimeoutMs: 6000, partitions: 6 },
  load: { ...SMALL_LOAD, steps: 18 },
  inject: (_env, rand): Injection => {
    let joins = 0;
    let leaves = 0;
    return {
      atStep: async (_offset, p) => {
        const live = p.consumers.filter((c) => c.running());
        if (live.length <= 2 || (live.length < 4 && rand() < 0.5)) {
          p.addConsumer();
          joins += 1;
        } else {
          await live[Math.floor(rand() * live.length)]!.stop('SIGTERM');
          leaves += 1;
        }
      },
      healed: async () => undefined,
      notes: () => `${joins} joins, ${leaves} leaves`,
    };
  },
};

/** A second poller process on the same table: the lease lets one run at a time, and neither loses a row. */
const twoPollers: ScenarioDef = {
  id: 'C3-two-pollers', title: 'two poller processes on one table under its lease; one is killed and restarted', boundMs: 150_000,
  pipeline: { pollers: 2 },
  inject: (_env, rand) => ({
    atStep: async (offset, p) => {
      if (offset === 2) await p.pollers[Math.floor(rand() * 2)]!.restart();
    },
    healed: async () => undefined,
    notes: () => 'one poller SIGKILLed and restarted mid-load',
  }),
};

const only = process.env.HIGHWATER_FAULTS_ONLY;
// The leader kill three times: it failed once, cause unknown, before issue 9's last session; each repetition
// kills whichever node leads partition 0 then (the coordinator or the controller may be on it, or not).
const scenarios = [{ def: leaderKill, repetitions: 3 }, { def: threeConsumers, repetitions: 1 }, { def: twoPollers, repetitions: 1 }];
const selected = scenarios.filter((s) => !only || new RegExp(only).test(s.def.id));

// HIGHWATER_FAULTS_ONLY may select no cluster scenario: then the cluster is not started, and an empty suite must not
// fail the run (vitest fails a suite without tests).
describe.skipIf(selected.length === 0)(`fault matrix, three-broker cluster (seed ${seed})`, () => {
  if (selected.length === 0) it.skip('no cluster scenario matches HIGHWATER_FAULTS_ONLY', () => undefined);
  beforeAll(async () => {
    cluster = await startKafkaCluster();
    console.log(`[faults] three-node KRaft cluster on ${cluster.brokers.join(', ')}`);
  }, 300_000);
  afterAll(async () => {
    if (results.length > 0) console.log(`[faults] three-broker cluster, seed ${seed}\n${formatTable(results)}`);
    // A failed scenario keeps the brokers' logs (the harness keeps the services' logs and databases too).
    const failed = results.some((r) => r.passed < r.repetitions);
    if (failed && cluster) console.log(`[faults] kept the cluster's data and logs in ${cluster.dir}`);
    await cluster?.stop({ keep: failed });
  });

  for (const { def, repetitions } of selected) {
    it(`${def.id}: ${def.title}`, async () => {
      const result = await runScenario(env(), def, seed, repetitions);
      results.push(result);
      expect(result.failures, result.failures.join('\n')).toEqual([]);
    });
  }
});
