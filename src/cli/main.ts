import { Command, CommanderError, Option } from 'commander';
import { classifyUnknownError } from '../errors.js';
import { positiveInt, portNumber } from './parsers.js';
import { packageVersion } from './version.js';
import { scrubSecrets } from '../logger.js';
import { checkCommand, consumeCommand, initCommand, pollCommand, resetCommand, resumeCommand, runCommand, runsCommand, statusCommand } from './commands.js';
import { loggerFor, type GlobalOptions } from './context.js';
import { EXIT, exitCodeFor } from './exit-codes.js';
import { runDemo } from '../dev/demo/demo.js';
import { backfillCommand } from './commands-backfill.js';
import {
  DLQ_HELP, REBUILD_HELP, RESET_OFFSETS_HELP, dlqListCommand, dlqReplayCommand, rebuildCommand, resetOffsetsCommand,
  type DlqListOptions, type DlqReplayOptions, type RebuildCommandOptions, type ResetOffsetsOptions,
} from './commands-target.js';
import { reconcileCommand, type ReconcileCliOptions } from './commands-reconcile.js';
import { DEV_KAFKA_HELP, devKafkaCommand, type DevKafkaOptions } from './commands-dev.js';

/** The `highwater` command line. Every subcommand resolves to an exit code; nothing calls process.exit but shutdown. */

const EXIT_HELP = `
Exit codes:
  0  success
  1  failure (a table failed, a service stayed unreachable after retries, …)
  2  usage or configuration error (the message names each bad field)
  3  a check found a difference (reconcile, demo)

Settings: the YAML file (--config, or HIGHWATER_CONFIG, default ./highwater.yaml), then environment variables
(HIGHWATER_KAFKA_BROKERS, HIGHWATER_DB_<NAME>_URL, HIGHWATER_SCHEMA_REGISTRY_URL, HIGHWATER_LOG_LEVEL), then flags.`;

function globals(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals() as GlobalOptions;
}

export function buildProgram(run: (code: Promise<number>) => void): Command {
  const program = new Command('highwater')
    .description('Continuous, lossless replication of blob tables through Kafka.')
    .version(packageVersion(), '-V, --version', 'print the version and exit')
    .option('-c, --config <file>', 'configuration file')
    .option('--json', 'machine-readable output')
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace']))
    .addHelpText('after', EXIT_HELP)
    .exitOverride()
    .showHelpAfterError();

  program.command('check').description('preflight: connect to every database and the broker, check every configured table and column; changes nothing')
    .action((_o, cmd: Command) => run(checkCommand(globals(cmd))));
  program.command('init').description('run the preflight, then create or upgrade the control store and target tables, and create the topics')
    .action((_o, cmd: Command) => run(initCommand(globals(cmd))));
  program.command('poll').description('publish the changes of every enabled table once (or every interval with --every)')
    .option('-t, --table <name...>', 'only these tables')
    .option('--every', 'keep polling every poll.intervalSeconds until SIGINT/SIGTERM')
    .option('--metrics-port <n>', 'with --every: serve /metrics, /healthz, /readyz on this port (0: any free port); default HIGHWATER_METRICS_PORT, metrics.port, metrics.ports.poll', portNumber)
    .action((_o, cmd: Command) => run(pollCommand(globals(cmd) as GlobalOptions & { table?: string[]; every?: boolean; metricsPort?: number })));
  program.command('resume <runId>').description('continue a failed or interrupted run from its last completed batch')
    .option('--no-wait', 'fail at once when a table of the run is still leased (by a poller that was killed, say) instead of waiting for the lease to expire')
    .action((runId: string, _o, cmd: Command) => run(resumeCommand(globals(cmd) as GlobalOptions & { wait?: boolean }, runId)));
  program.command('reset <runId>').description("restart a run's progress from its window start (targets keep their rows)")
    .action((runId: string, _o, cmd: Command) => run(resetCommand(globals(cmd), runId)));
  program.command('consume').description('apply the change topics to the targets until SIGINT/SIGTERM')
    .option('--target <name...>', 'only these targets')
    .option('--metrics-port <n>', 'serve /metrics, /healthz, /readyz on this port (0: any free port); default HIGHWATER_METRICS_PORT, metrics.port, metrics.ports.consume', portNumber)
    .action((_o, cmd: Command) => run(consumeCommand(globals(cmd) as GlobalOptions & { target?: string[]; metricsPort?: number })));
  program.command('run').description('poller and consumers in one process, for small deployments')
    .option('--metrics-port <n>', 'serve /metrics, /healthz, /readyz on this port (0: any free port); default HIGHWATER_METRICS_PORT, metrics.port, metrics.ports.run', portNumber)
    .action((_o, cmd: Command) => run(runCommand(globals(cmd) as GlobalOptions & { metricsPort?: number })));
  program.command('runs [runId]').description('list recent runs, or show one with its tables and batches')
    .option('--limit <n>', 'how many runs to list', positiveInt, 20)
    .action((runId: string | undefined, _o, cmd: Command) => run(runsCommand(globals(cmd) as GlobalOptions & { limit?: number }, runId)));
  program.command('status').description("per table: high-watermark, lease, last run; per target: consistent_as_of")
    .action((_o, cmd: Command) => run(statusCommand(globals(cmd))));
  program.command('reset-offsets').description("move a target's consumer group to the log start or to a time, in the target and in Kafka")
    .requiredOption('--target <name>', 'the target whose group moves')
    .requiredOption('--to <earliest|time>', '"earliest", or an ISO-8601 time with its zone (2026-01-31T00:00:00Z)')
    .option('-t, --table <name...>', 'only these tables (default: every table of the target)')
    .addHelpText('after', RESET_OFFSETS_HELP)
    .action((_o, cmd: Command) => run(resetOffsetsCommand(globals(cmd) as GlobalOptions & ResetOffsetsOptions)));
  program.command('rebuild').description('replay the table topics into a fresh schema until caught up; --swap puts it in place of the live one')
    .requiredOption('--target <name>', 'the target to rebuild')
    .option('--into <schema>', 'schema to rebuild into (must not exist; default <schema>_rebuild_<yyyymmddhhmmss>)')
    .option('--swap', 'once caught up, swap the rebuilt schema in atomically (the target\'s consumers must be stopped)')
    .option('--timeout <seconds>', 'give up waiting for the rebuild to catch up after this long (0: no limit)', '0')
    .addHelpText('after', REBUILD_HELP)
    .action((_o, cmd: Command) => run(rebuildCommand(globals(cmd) as GlobalOptions & RebuildCommandOptions)));
  const dlq = program.command('dlq').description('list and replay dead letters (<topic>.dlq)').addHelpText('after', DLQ_HELP);
  dlq.command('list').description('print the dead letters of a table: where, key, error kind, reason, origin, failed-at')
    .requiredOption('-t, --table <name>', 'the table whose <topic>.dlq is read (from its beginning)')
    .option('--limit <n>', 'print at most this many, oldest failure first', '100')
    .action((_o, cmd: Command) => run(dlqListCommand(globals(cmd) as GlobalOptions & DlqListOptions)));
  dlq.command('replay').description('re-publish dead letters to the table topic (same key and value, without the hw-error* headers) so they are tried again')
    .requiredOption('-t, --table <name>', 'the table whose dead letters are replayed')
    .option('--offset <[partition:]offset...>', 'only these dead letters, as `dlq list` prints them (default: all)')
    .action((_o, cmd: Command) => run(dlqReplayCommand(globals(cmd) as GlobalOptions & DlqReplayOptions)));
  program.command('reconcile').description('compare targets with their sources per table, tenant and BU: counts, latest ModifiedOn, checksums, missing/extra/differing rows, orphans')
    .option('-t, --table <name...>', 'only these tables (default: every enabled table of each target)')
    .option('--target <name...>', 'only these targets')
    .option('--sample <fraction>', 'hash the content of a key range holding this fraction (0..1) of the keys; keys and ModifiedOn of every row are compared anyway')
    .option('--sample-from <hex>', 'first two hex characters of the sampled key range (default: random)')
    .option('--all', 'hash the content of every row (the default)')
    .option('--examples <n>', 'example keys listed per kind of difference and business unit', '10')
    .action((_o, cmd: Command) => run(reconcileCommand(globals(cmd) as ReconcileCliOptions)));
  program.command('backfill').description('republish chosen rows from the source, whatever their window')
    .requiredOption('-t, --table <name>', 'the table')
    .requiredOption('--keys <key...>', 'row keys to republish')
    .action((_o, cmd: Command) => run(backfillCommand(globals(cmd) as GlobalOptions & { table: string; keys: string[] })));
  program.command('demo').description('run the whole pipeline on sample data with a local Kafka and the local PostgreSQL')
    .action((_o, cmd: Command) => run(runDemo({ logger: loggerFor({ ...globals(cmd), logLevel: globals(cmd).logLevel ?? 'error' }) })));
  const dev = program.command('dev').description('local services for trying highwater without Docker');
  dev.command('kafka').description('run a single-node Kafka (KRaft) from Maven Central jars until Ctrl-C; prints its bootstrap address')
    .option('--port <n>', 'broker port (0: any free port)', portNumber, 9092)
    .option('--registry', 'also run a Confluent-compatible schema registry (Apicurio), storing its schemas in the broker')
    .option('--registry-port <n>', 'schema registry port (default: any free port)', portNumber)
    .option('--data-dir <dir>', 'keep the broker\'s data here across runs (default: a temporary directory removed on exit)')
    .addHelpText('after', DEV_KAFKA_HELP)
    .action((_o, cmd: Command) => run(devKafkaCommand(globals(cmd) as DevKafkaOptions)));
  return program;
}

export async function main(argv: readonly string[]): Promise<number> {
  ignoreClosedPipes();
  let pending: Promise<number> | undefined;
  const program = buildProgram((p) => {
    pending = p;
  });
  try {
    await program.parseAsync([...argv]);
    return pending ? await pending : EXIT.OK;
  } catch (err) {
    return reportFailure(err);
  }
}

function reportFailure(err: unknown): number {
  if (err instanceof CommanderError) return commanderExit(err);
  // One line and its hint, never a stack: a driver error that escaped its module is classified here.
  const error = classifyUnknownError(err);
  const cause = error.code === 'INTERNAL' && error.cause instanceof Error && error.cause.stack ? `\n${error.cause.stack}` : '';
  process.stderr.write(`highwater: ${scrubSecrets(firstLines(error.message))}\n  hint: ${error.hint}${scrubSecrets(cause)}\n`);
  return exitCodeFor(error);
}

function commanderExit(err: CommanderError): number {
  if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return EXIT.OK;
  // `highwater` alone (or `highwater dlq`) prints the help to stderr with exit code 1: that is a usage error.
  if (err.code === 'commander.help') {
    if (err.exitCode === 0) return EXIT.OK;
    process.stderr.write('highwater: a command is required (see the list above)\n');
  }
  return EXIT.USAGE;
}

// A message is one line, except a configuration error, which lists its fields one per line; driver messages that
// quote a whole statement are cut.
function firstLines(message: string): string {
  return message.startsWith('invalid configuration') ? message : message.split('\n')[0]!;
}

/**
 * `highwater … | head` closes the pipe before the output ends; the rest has no reader, which is not a failure.
 * Without a listener Node turns the EPIPE into an uncaught exception and a stack trace.
 */
function ignoreClosedPipes(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
    });
  }
}
