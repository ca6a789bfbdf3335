// Lint rules from STYLE.md: deterministic workflows (no Node built-ins, activity imports type-only),
// no floating promises, consistent type imports, no import cycles.
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';
import { builtinModules } from 'node:module';

const nodeBuiltins = [...builtinModules, ...builtinModules.map((m) => `node:${m}`)];

// The modules that read the environment, one per process kind: the worker's, the CLI's and the stack
// scripts'. Anywhere else `process.env` may only be copied whole into a child process's environment
// (`{ ...process.env, X: '1' }`: passed on unread); reading, writing or handing it on otherwise is an
// error. Tests (test/**) may set and read it: they configure the process under test. The lint
// fixtures are linted like product code.
const SETTINGS_MODULES = ['activities/env.ts', 'worker/cliSettings.ts', 'infra/settings.ts'];
const PROCESS_ENV_USE = "MemberExpression[object.name='process'][property.name='env']:not(SpreadElement > MemberExpression)";
const PROCESS_ENV_MESSAGE = `read the environment through this process kind's settings module (${SETTINGS_MODULES.join(', ')}); elsewhere only \`{ ...process.env }\` for a child process`;

export default tseslint.config(
  // test/fixtures/lint holds code that breaks the rules on purpose (test/unit/lint.test.ts lints it explicitly).
  { ignores: ['node_modules/**', '.venv/**', '.data/**', 'trainer/**', 'dist/**', '**/*.mjs', 'test/fixtures/lint/**'] },
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    plugins: { 'import-x': importX },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports', disallowTypeAnnotations: false }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' }],
      'import-x/no-cycle': 'error',
    },
  },
  // One settings module per process kind reads the environment (DESIGN.md §1); see SETTINGS_MODULES.
  {
    files: ['**/*.ts'],
    ignores: [...SETTINGS_MODULES, 'test/**', '!test/fixtures/lint/**'],
    rules: {
      'no-restricted-syntax': ['error', { selector: PROCESS_ENV_USE, message: PROCESS_ENV_MESSAGE }],
      'no-restricted-imports': [
        'error',
        { paths: ['process', 'node:process'].map((name) => ({ name, importNames: ['env'], message: PROCESS_ENV_MESSAGE })) },
      ],
    },
  },
  {
    files: ['workflows/**/*.ts', 'common/**/*.ts', 'test/fixtures/lint/**/*.ts'],
    ignores: ['common/searchAttributes.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          paths: nodeBuiltins.map((name) => ({ name, message: 'workflow code must be deterministic: no Node built-ins' })),
          patterns: [
            { group: ['**/activities', '**/activities/**'], allowTypeImports: true, message: 'workflows import activity types only' },
            { group: ['openai', '@aws-sdk/*', '@temporalio/activity', '@temporalio/worker', '@temporalio/client'], message: 'no I/O libraries in workflow code' },
          ],
        },
      ],
    },
  },
  {
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off', '@typescript-eslint/no-non-null-assertion': 'off' },
  },
);
