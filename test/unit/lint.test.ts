/** The lint rules of STYLE.md are live: the repo is clean and a rule-breaking workflow is caught. */
import * as path from 'node:path';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '..', '..');

describe('lint', () => {
  it('flags Node built-ins, activity value imports, client imports and floating promises in workflow code', async () => {
    // The fixture is under the same path-scoped rules as workflows/ and normally ignored.
    const eslint = new ESLint({ cwd: ROOT, ignore: false });
    const [res] = await eslint.lintFiles([path.join(ROOT, 'test/fixtures/lint/badWorkflow.ts')]);
    const rules = (res?.messages ?? []).map((m) => m.ruleId);
    expect(rules.filter((r) => r === '@typescript-eslint/no-restricted-imports').length).toBeGreaterThanOrEqual(3);
    expect(rules).toContain('@typescript-eslint/no-floating-promises');
  }, 120_000);

  it('passes on the whole repository', async () => {
    const eslint = new ESLint({ cwd: ROOT });
    const results = await eslint.lintFiles(['common', 'workflows', 'activities', 'worker']);
    const errors = results.flatMap((r) => r.messages.filter((m) => m.severity === 2).map((m) => `${path.relative(ROOT, r.filePath)}:${m.line} ${m.ruleId} ${m.message}`));
    expect(errors).toEqual([]);
  }, 300_000);
});
