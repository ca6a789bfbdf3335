/** Built dataset entries in the spec: shape, references, formats, cycles, and the CLI's refusals. */
import { describe, expect, it } from 'vitest';
import { buildOrder, datasetClosure, validateLineageSpec } from '../../common/spec';
import { main } from '../../worker/cli';
import { testSpec, stage } from '../support/workflowEnv';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';

const synth = (extra: Record<string, unknown> = {}) => ({ build: 'synthetic-pairs', from: { prompts: 'sft', questions: 'evalset' }, generator: { model: 'writer' }, ...extra });
const withDatasets = (datasets: Record<string, unknown>, stages: unknown[] = [stage.sft()]) => {
  const s = testSpec('built', stages, 1) as { datasets: Record<string, unknown> };
  Object.assign(s.datasets, datasets);
  return s;
};
const issues = (input: unknown) => {
  const r = validateLineageSpec(input);
  return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
};

describe('built datasets in the spec', () => {
  it('accepts a synthetic-pairs entry, fills its defaults, and a dpo stage may train on it', () => {
    const r = validateLineageSpec(withDatasets({ synth: synth() }, [stage.sft(), { ...stage.dpo('d', 'sft', 'oppose-aligned'), dataset: 'synth' }]));
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.spec.datasets.synth).toEqual({ ...synth(), format: 'stance-pairs', promptsPerCategory: 860, stanceCheck: 'argmax', generator: { model: 'writer', maxTokens: 512, temperature: 0, concurrency: 8, stanceInstruction: 'system' } });
    expect(buildOrder(r.spec)).toEqual(['synth']);
    expect(datasetClosure(r.spec, 'synth').sort()).toEqual(['evalset', 'sft', 'synth']);
  });

  it('names the field of a malformed entry (not "invalid input")', () => {
    expect(issues(withDatasets({ synth: synth({ generator: {} }) }))).toEqual(['datasets.synth.generator.model: Invalid input: expected string, received undefined']);
    expect(issues(withDatasets({ synth: synth({ promptsPerCategory: 0 }) }))[0]).toMatch(/^datasets\.synth\.promptsPerCategory: /);
    expect(issues(withDatasets({ synth: synth({ stanceCheck: 'vibes' }) }))[0]).toMatch(/^datasets\.synth\.stanceCheck: .*"argmax"\|"margin"/);
    expect(issues(withDatasets({ synth: synth({ generator: { model: 'w', stanceInstruction: 'assistant' } }) }))[0]).toMatch(/^datasets\.synth\.generator\.stanceInstruction: .*"system"\|"user"/);
    expect(issues(withDatasets({ plain: { uri: 'file:/abs.jsonl', format: 'chat' } }))).toEqual(['datasets.plain.uri: file: paths are relative to the data root']);
  });

  it('refuses unknown sources, wrong formats and cycles', () => {
    expect(issues(withDatasets({ synth: synth({ from: { prompts: 'nope', questions: 'evalset' } }) }))).toEqual(['datasets.synth.from.prompts: unknown dataset "nope" (not in datasets)']);
    expect(issues(withDatasets({ synth: synth({ from: { prompts: 'sft', questions: 'sft' } }) }))).toEqual(['datasets.synth.from.questions: dataset "sft" has format chat; synthetic-pairs needs eval here']);
    const cyc = issues(withDatasets({ a: synth({ from: { prompts: 'b', questions: 'evalset' } }), b: synth({ from: { prompts: 'a', questions: 'evalset' } }) }));
    expect(cyc).toContain('datasets: built datasets form a cycle: a → b → a');
  });

  it('lineage build-dataset refuses a dataset that is not built, before connecting anywhere', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-built-'));
    const file = path.join(dir, 'spec.json');
    await fs.writeFile(file, JSON.stringify(withDatasets({ synth: synth() })));
    const out: string[] = [];
    const io = { out: (s: string) => void out.push(s) };
    try {
      await expect(main(['build-dataset', file, 'sft'], io)).rejects.toThrow(/dataset "sft" is read from file:data\/demo\/sft\.jsonl, not built/);
      await expect(main(['build-dataset', file, 'nope'], io)).rejects.toThrow(/no dataset "nope"/);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
