// @ts-check
import tseslint from 'typescript-eslint';

/**
 * Lint is the machine check of the dependency rule (docs/architecture.md): engines are chosen only in the
 * composition root (src/wiring.ts), kafkajs lives only in src/kafka/, the poller side and the apply side do not
 * import each other, the engine folders import src/ and never each other. Plus the promise rules a pipeline that
 * commits offsets cannot do without (a floating promise is an error nobody sees).
 */

/**
 * Re-allows a contract folder inside a restricted role folder. Patterns are gitignore rules, which cannot re-include a
 * file whose parent folder is excluded: each folder on the way down is re-included and its other files excluded again.
 */
const except = (role, contract) => {
  const steps = contract.split('/');
  return steps.flatMap((_, i) => {
    const folder = `${role}/${steps.slice(0, i + 1).join('/')}`;
    return i < steps.length - 1 ? [`!${folder}/`, `${folder}/**`] : [`!${folder}/`, `!${folder}/**`];
  });
};

const ENGINE_FOLDERS = {
  group: ['**/connectors/**', '**/consumers/**'],
  message: 'engines are picked in src/wiring.ts only (the composition root)',
};
const KAFKAJS = {
  group: ['kafkajs', 'kafkajs/*'],
  message: 'kafkajs is imported only inside src/kafka/; use its small types (src/kafka/client.ts)',
};
const MSSQL = { group: ['mssql', 'mssql/*'], message: 'the mssql driver belongs to src/db/sqlserver.ts and the sqlserver engine folders' };
const PG = {
  group: ['pg', 'pg-copy-streams'],
  message: 'the pg driver belongs to src/db/postgres.ts, the control store and the postgres engine folders',
};
const POLLER = {
  group: ['**/poll/**'],
  message: 'the apply side does not import the poller side; shared parts go in src/events/ or src/contract.ts',
};
const APPLY = {
  group: ['**/apply/**', '**/ops/**'],
  message: 'the poller side does not import the apply side; shared parts go in src/events/ or src/contract.ts',
};
const UPWARD = {
  group: [
    '**/apply/**',
    ...except('**/apply', 'sink'),
    '**/poll/**',
    ...except('**/poll', 'source'),
    '**/cli/**',
    '**/wiring.js',
    '**/ops/**',
    ...except('**/ops', 'reconcile/side'),
    '**/dev/**',
  ],
  message: 'shared modules and contracts do not import the parts that use them',
};
const SRC_ROLES = {
  group: [
    '**/src/apply/**',
    ...except('**/src/apply', 'sink'),
    '**/src/poll/**',
    ...except('**/src/poll', 'source'),
    '**/src/cli/**',
    '**/src/wiring.js',
    '**/src/ops/**',
    ...except('**/src/ops', 'reconcile/side'),
    '**/src/dev/**',
  ],
  message: 'engine folders use the contracts and shared helpers of src/, not its roles',
};
const OTHER_TARGET = (other) => ({
  group: [`../${other}/**`, `**/consumers/${other}/**`],
  message: 'an engine folder does not import another engine',
});
const OTHER_SOURCE = (other) => ({
  group: [`../${other}/**`, `**/connectors/${other}/**`],
  message: 'an engine folder does not import another engine',
});

const restrict = (...patterns) => ({ 'no-restricted-imports': ['error', { patterns }] });

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'test/**', '**/*.js'] },
  {
    files: ['src/**/*.ts', 'connectors/**/*.ts', 'consumers/**/*.ts'],
    languageOptions: { parser: tseslint.parser, parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false }],
      '@typescript-eslint/await-thenable': 'error',
      'no-empty': ['error', { allowEmptyCatch: false }],
    },
  },
  // src/: every role, with what each may not reach. Later blocks replace earlier ones for the files they match.
  { files: ['src/**/*.ts'], rules: restrict(ENGINE_FOLDERS, KAFKAJS, MSSQL) },
  { files: ['src/apply/**/*.ts', 'src/ops/*.ts'], rules: restrict(ENGINE_FOLDERS, KAFKAJS, MSSQL, PG, POLLER) },
  { files: ['src/poll/**/*.ts'], rules: restrict(ENGINE_FOLDERS, KAFKAJS, MSSQL, PG, APPLY) },
  {
    files: [
      'src/contract.ts',
      'src/errors.ts',
      'src/events/**/*.ts',
      'src/sql/**/*.ts',
      'src/time/**/*.ts',
      'src/apply/sink/**/*.ts',
      'src/poll/source/**/*.ts',
      'src/ops/reconcile/side/**/*.ts',
    ],
    rules: restrict(ENGINE_FOLDERS, KAFKAJS, MSSQL, PG, UPWARD),
  },
  { files: ['src/db/postgres.ts'], rules: restrict(ENGINE_FOLDERS, KAFKAJS, MSSQL, UPWARD) },
  { files: ['src/db/sqlserver.ts'], rules: restrict(ENGINE_FOLDERS, KAFKAJS, PG, UPWARD) },
  { files: ['src/db/migrate.ts'], rules: restrict(ENGINE_FOLDERS, KAFKAJS, MSSQL, PG, UPWARD) },
  { files: ['src/kafka/**/*.ts'], rules: restrict(ENGINE_FOLDERS, MSSQL, PG, UPWARD) },
  // The composition root picks engines; it still reaches kafkajs only through src/kafka/.
  { files: ['src/wiring.ts'], rules: restrict(KAFKAJS) },
  // Engine folders: src/'s contracts and helpers, their own driver, never another engine or a Kafka client.
  {
    files: ['connectors/postgres/**/*.ts'],
    rules: restrict(
      { group: ['**/consumers/**'], message: 'a source connector does not import a target' },
      OTHER_SOURCE('sqlserver'),
      KAFKAJS,
      MSSQL,
      SRC_ROLES,
    ),
  },
  {
    files: ['connectors/sqlserver/**/*.ts'],
    rules: restrict(
      { group: ['**/consumers/**'], message: 'a source connector does not import a target' },
      OTHER_SOURCE('postgres'),
      KAFKAJS,
      PG,
      SRC_ROLES,
    ),
  },
  {
    files: ['consumers/postgres/**/*.ts'],
    rules: restrict(
      { group: ['**/connectors/**'], message: 'a target does not import a source connector' },
      OTHER_TARGET('sqlserver'),
      KAFKAJS,
      MSSQL,
      SRC_ROLES,
    ),
  },
  {
    files: ['consumers/sqlserver/**/*.ts'],
    rules: restrict(
      { group: ['**/connectors/**'], message: 'a target does not import a source connector' },
      OTHER_TARGET('postgres'),
      KAFKAJS,
      PG,
      SRC_ROLES,
    ),
  },
);
