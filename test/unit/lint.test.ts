/** The lint rules of STYLE.md and DESIGN.md are live: the repo is clean and rule-breaking code is caught. */
import * as path from 'node:path';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '..', '..');

/** Rule ids reported for a fixture, with their line numbers. The fixtures are normally ignored. */
async function lintFixture(name: string): Promise<Array<{ rule: string | null; line: number }>> {
  const eslint = new ESLint({ cwd: ROOT, ignore: false });
  const [res] = await eslint.lintFiles([path.join(ROOT, 'test/fixtures/lint', name)]);
  return (res?.messages ?? []).map((m) => ({ rule: m.ruleId, line: m.line }));
}

describe('lint', () => {
  it('flags Node built-ins, activity value imports, client imports and floating promises in workflow code', async () => {
    // The fixture is under the same path-scoped rules as workflows/.
    const rules = (await lintFixture('badWorkflow.ts')).map((m) => m.rule);
    expect(rules.filter((r) => r === '@typescript-eslint/no-restricted-imports').length).toBeGreaterThanOrEqual(3);
    expect(rules).toContain('@typescript-eslint/no-floating-promises');
  }, 120_000);

  it('flags every read of process.env outside a settings module, and leaves a copy for a child process alone', async () => {
    const messages = await lintFixture('readsEnv.ts');
    const envLines = (rule: string) => messages.filter((m) => m.rule === rule).map((m) => m.line);
    // process.env.X, process.env['X'], process.env passed on, and a write.
    expect(envLines('no-restricted-syntax')).toEqual([5, 6, 7, 10]);
    // `import { env } from 'node:process'`
    expect(envLines('no-restricted-imports')).toEqual([3]);
    // `{ ...process.env, PYTHONUNBUFFERED: '1' }` (line 12) is not a read.
    expect(messages.filter((m) => m.line === 12)).toEqual([]);
  }, 120_000);

  it('passes on the whole repository', async () => {
    const eslint = new ESLint({ cwd: ROOT });
    const results = await eslint.lintFiles(['common', 'workflows', 'activities', 'worker', 'infra', 'bench']);
    const errors = results.flatMap((r) => r.messages.filter((m) => m.severity === 2).map((m) => `${path.relative(ROOT, r.filePath)}:${m.line} ${m.ruleId} ${m.message}`));
    expect(errors).toEqual([]);
  }, 300_000);
});
