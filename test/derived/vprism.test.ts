/** V-PRISM as a built dataset: the spec entry (defaults, refusals, `from` formats), the build key, the answer parsing, and the CLI's validate. */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildOrder, validateLineageSpec, VPrismBuild } from '../../common/spec';
import { firstLine, saysYes, vprismBuildKey } from '../../activities/derived/vprism';
import { main } from '../../worker/cli';
import { stage, testSpec } from '../support/workflowEnv';

const vprism = (extra: Record<string, unknown> = {}) => ({ build: 'v-prism', from: { statements: 'statements' }, generator: { model: 'writer' }, ...extra });
const withDatasets = (datasets: Record<string, unknown>) => {
  const s = testSpec('vprism', [stage.sft()], 1) as { datasets: Record<string, unknown>; evaluation: Record<string, unknown> };
  Object.assign(s.datasets, { statements: { uri: 'file:test/fixtures/prism/statements.jsonl', format: 'prompts' }, ...datasets });
  return s;
};
const issues = (input: unknown) => {
  const r = validateLineageSpec(input);
  return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
};

describe('v-prism in the spec', () => {
  it("fills the paper's numbers as defaults, and the eval set may be the built one", () => {
    const spec = withDatasets({ vp: vprism() });
    spec.evaluation.evalSet = 'vp';
    const r = validateLineageSpec(spec);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.spec.datasets.vp).toEqual({
      ...vprism(),
      format: 'eval',
      questionsPerCategory: 50,
      valueCheck: true,
      umapDimensions: 20,
      umapNeighbors: 15,
      clustering: { minClusterSize: 10, topNgrams: 10, assignThreshold: 0.3 },
      generator: { model: 'writer', maxTokens: 128, concurrency: 8 },
    });
    expect(buildOrder(r.spec)).toEqual(['vp']);
  });

  it('names the field of a malformed entry, and refuses statements of the wrong format', () => {
    expect(issues(withDatasets({ vp: vprism({ generator: {} }) }))).toEqual(['datasets.vp.generator.model: Invalid input: expected string, received undefined']);
    expect(issues(withDatasets({ vp: vprism({ clustering: { minClusterSize: 1 } }) }))[0]).toMatch(/^datasets\.vp\.clustering\.minClusterSize: /);
    expect(issues(withDatasets({ vp: vprism({ questionsPerCategory: 0 }) }))[0]).toMatch(/^datasets\.vp\.questionsPerCategory: /);
    expect(issues(withDatasets({ vp: vprism({ from: { statements: 'evalset' } }) }))).toEqual(['datasets.vp.from.statements: dataset "evalset" has format eval; v-prism needs prompts or chat here']);
    expect(issues(withDatasets({ vp: vprism({ from: { prompts: 'statements' } }) }))[0]).toMatch(/^datasets\.vp\.from/);
  });
});

describe('v-prism build key', () => {
  const base = { build: VPrismBuild.parse(vprism()), statements: 'a'.repeat(64), topics: { abortion: 'abortion rights' }, generatorEndpoint: 'http://127.0.0.1:1/v1', seed: 3 };
  const key = (over: Partial<typeof base> = {}, build: Record<string, unknown> = {}) => vprismBuildKey({ ...base, ...over, build: VPrismBuild.parse({ ...vprism(), ...build }) });

  it('changes with every setting that shapes the rows', () => {
    const k = key();
    expect(key()).toBe(k);
    for (const b of [{ umapDimensions: 5 }, { umapNeighbors: 5 }, { questionsPerCategory: 49 }, { valueCheck: false }, { clustering: { assignThreshold: 0.31 } }, { clustering: { minClusterSize: 11 } }, { limit: 9 }, { generator: { model: 'other' } }, { generator: { model: 'writer', maxTokens: 64 } }]) {
      expect(key({}, b)).not.toBe(k);
    }
    expect(key({ statements: 'b'.repeat(64) })).not.toBe(k);
    expect(key({ topics: { abortion: 'abortion bans' } })).not.toBe(k);
    expect(key({ seed: 4 })).not.toBe(k);
    expect(key({ generatorEndpoint: 'http://127.0.0.1:2/v1' })).not.toBe(k);
  });

  it('does not change with how fast the generator is asked, nor with the declared rows', () => {
    expect(key({}, { generator: { model: 'writer', concurrency: 1, requestsPerMinute: 10 }, rows: 550 })).toBe(key());
  });
});

describe('v-prism answer parsing', () => {
  it('takes the first line of a rephrasing or a name, without quotes or a label', () => {
    expect(firstLine('\n"Do you think abortion should be legal?"\nExplanation: ...')).toBe('Do you think abortion should be legal?');
    expect(firstLine('Question: Is lying ever right?')).toBe('Is lying ever right?');
    expect(firstLine('**Immigration Policies**')).toBe('Immigration Policies');
    expect(firstLine('  \n ')).toBe('');
  });
  it('reads Yes only from an answer that starts with it', () => {
    expect(['Yes', 'yes.', ' "Yes" - it is', '**Yes**'].map(saysYes)).toEqual([true, true, true, true]);
    expect(['No', 'Not sure, yes', 'Yesterday', ''].map(saysYes)).toEqual([false, false, false, false]);
  });
});

describe('lineage validate with a v-prism entry', () => {
  it('accepts it and refuses a bad setting naming the field', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-vprism-'));
    const good = path.join(dir, 'good.json');
    await fs.writeFile(good, JSON.stringify(withDatasets({ vp: vprism({ umapDimensions: 5, clustering: { minClusterSize: 3 } }) })));
    const out: string[] = [];
    await main(['validate', good], { out: (s: string) => void out.push(s) });
    expect(out.join('')).toMatch(/^ok: lineage "vprism"/);
    const bad = path.join(dir, 'bad.json');
    await fs.writeFile(bad, JSON.stringify(withDatasets({ vp: vprism({ umapDimensions: -1 }) })));
    await expect(main(['validate', bad], { out: () => undefined })).rejects.toThrow(/datasets\.vp\.umapDimensions/);
    await fs.rm(dir, { recursive: true, force: true });
  });
});
