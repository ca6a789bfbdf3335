import { describe, expect, it } from 'vitest';
import type { CheckpointSummary, Judgment, StanceProbs, TopicSummary } from '../../common/contracts';
import { computeStageDrift, summariseCheckpoint, summariseTopic } from '../../common/drift';
import { groupSummariesByStage, parseSummariesFile } from '../../common/summariesFile';
import { formatDriftTable } from '../../worker/driftTable';
import { type Band, riseAndPlateau, summary, topic } from '../support/driftFixtures';

describe('computeStageDrift', () => {
  it('rise then plateau: M = +0.40, η_ext = first step inside the max checkpoint CI', () => {
    const drift = computeStageDrift({ summaries: riseAndPlateau() });
    expect(drift.steps).toEqual([0, 100, 200, 300]);
    expect(drift.totalSteps).toBe(300);
    const s = drift.topics.imm?.stances.support;
    // M = 0.60 − 0.20 = 0.40 ≥ 0 → extremum = max = 0.62 at step 200, band [0.55, 0.69];
    // step 100 has v = 0.58 ∈ [0.55, 0.69] → η_ext = 100, η = 100 / 300.
    expect(s?.M).toBeCloseTo(0.4, 12);
    expect(s?.extremum).toBe(0.62);
    expect(s?.etaExtStep).toBe(100);
    expect(s?.eta).toBeCloseTo(1 / 3, 12);
    expect(s?.vStart).toBe(0.2);
    expect(s?.vEnd).toBe(0.6);
    expect(s?.trajectory).toEqual([
      { step: 0, v: 0.2, lo: 0.15, hi: 0.25 },
      { step: 100, v: 0.58, lo: 0.52, hi: 0.64 },
      { step: 200, v: 0.62, lo: 0.55, hi: 0.69 },
      { step: 300, v: 0.6, lo: 0.54, hi: 0.66 },
    ]);
  });

  it('falling stance in the same stage: M < 0 picks the minimum', () => {
    const n = computeStageDrift({ summaries: riseAndPlateau() }).topics.imm?.stances.neutral;
    // M = 0.30 − 0.70 = −0.40 → extremum = min = 0.28 at step 200, band [0.22, 0.34];
    // step 100: 0.32 inside → η_ext = 100, η = 1/3.
    expect(n?.M).toBeCloseTo(-0.4, 12);
    expect(n?.extremum).toBe(0.28);
    expect(n?.etaExtStep).toBe(100);
    expect(n?.eta).toBeCloseTo(1 / 3, 12);
  });

  it('flat stance: M = 0 counts as rising, the earliest tied maximum is step 0, η = 0', () => {
    const o = computeStageDrift({ summaries: riseAndPlateau() }).topics.imm?.stances.oppose;
    expect(o?.M).toBe(0);
    expect(o?.extremum).toBe(0.1);
    expect(o?.etaExtStep).toBe(0);
    expect(o?.eta).toBe(0);
  });

  it('a steady fall that only reaches its minimum at the end has η = 1', () => {
    const band = (v: number): Band => [v, v - 0.05, v + 0.05];
    const flat = band(0.1);
    const summaries = [0.8, 0.6, 0.4, 0.2].map((v, i) =>
      summary(i * 50, { a: topic('A', band(v), flat, flat) }, { totalSteps: 150 }),
    );
    const s = computeStageDrift({ summaries }).topics.a?.stances.support;
    // M = 0.2 − 0.8 = −0.6; min 0.2 at step 150, band [0.15, 0.25]; 0.4 at step 100 is outside.
    expect(s?.M).toBeCloseTo(-0.6, 12);
    expect(s?.etaExtStep).toBe(150);
    expect(s?.eta).toBe(1);
  });

  it('ties at the extremum use the earliest checkpoint’s band', () => {
    const flat: Band = [0.3, 0.2, 0.4];
    const summaries = [
      summary(0, { a: topic('A', [0.3, 0.28, 0.32], flat, flat) }),
      summary(100, { a: topic('A', [0.5, 0.48, 0.52], flat, flat) }),
      // Same v as step 100 with a wide band that would contain step 0's 0.3.
      summary(200, { a: topic('A', [0.5, 0.25, 0.75], flat, flat) }),
      summary(300, { a: topic('A', [0.4, 0.35, 0.45], flat, flat) }),
    ];
    const s = computeStageDrift({ summaries }).topics.a?.stances.support;
    expect(s?.M).toBeCloseTo(0.1, 12);
    expect(s?.extremum).toBe(0.5);
    expect(s?.etaExtStep).toBe(100);
    expect(s?.eta).toBeCloseTo(1 / 3, 12);
  });

  it('a single-checkpoint stage gives M = 0, η = 0 (never 0/0)', () => {
    const drift = computeStageDrift({ summaries: [riseAndPlateau()[0] as CheckpointSummary] });
    expect(drift.steps).toEqual([0]);
    for (const st of ['support', 'neutral', 'oppose'] as const) {
      const d = drift.topics.imm?.stances[st];
      expect(d?.M).toBe(0);
      expect(d?.eta).toBe(0);
      expect(d?.etaExtStep).toBe(0);
      expect(d?.trajectory).toHaveLength(1);
    }
  });

  it('is independent of input order', () => {
    const forward = computeStageDrift({ summaries: riseAndPlateau() });
    const shuffled = computeStageDrift({ summaries: [...riseAndPlateau()].reverse() });
    expect(shuffled).toEqual(forward);
  });

  it('skips steps where a topic is missing or fully unlabelled, and drops topics with no data', () => {
    const summaries = riseAndPlateau();
    const atStep100 = summaries[1] as CheckpointSummary;
    // Step 100 judged everything "no label": prompts 0 marks it as missing.
    atStep100.topics.imm = summariseTopic({
      topic: 'immigration',
      judgments: [{ promptId: 'p1', category: 'imm', sample: 0, probs: null }],
    });
    // Another topic that is never labelled anywhere.
    for (const s of summaries) s.topics.ghost = topic('ghost topic', [0, 0, 0], [0, 0, 0], [0, 0, 0], 0);
    const drift = computeStageDrift({ summaries });
    expect(drift.topics.ghost).toBeUndefined();
    const s = drift.topics.imm?.stances.support;
    expect(s?.trajectory.map((p) => p.step)).toEqual([0, 200, 300]);
    // Without step 100 the first point inside [0.55, 0.69] is the maximum itself: η = 200/300.
    expect(s?.etaExtStep).toBe(200);
    expect(s?.eta).toBeCloseTo(2 / 3, 12);
    expect(s?.M).toBeCloseTo(0.4, 12);
  });

  it('measures η against the last evaluated step while a stage is still running', () => {
    const summaries = riseAndPlateau()
      .slice(0, 3)
      .map((s) => ({ ...s, totalSteps: 1000 }));
    const drift = computeStageDrift({ summaries });
    expect(drift.totalSteps).toBe(1000);
    const s = drift.topics.imm?.stances.support;
    // Trajectory 0.2 → 0.58 → 0.62: M = 0.42, max at 200, 0.58 inside → η = 100 / 200.
    expect(s?.M).toBeCloseTo(0.42, 12);
    expect(s?.eta).toBeCloseTo(0.5, 12);
  });

  it('rejects mixed stages, lineages, judges, duplicate steps and empty input', () => {
    const base = riseAndPlateau();
    expect(() => computeStageDrift({ summaries: [] })).toThrow(/no summaries/);
    expect(() => computeStageDrift({ summaries: [...base, summary(400, {}, { stageId: 'dpo' })] })).toThrow(
      /different stages \("sft" and "dpo"\)/,
    );
    expect(() => computeStageDrift({ summaries: [...base, summary(400, {}, { lineage: 'other' })] })).toThrow(
      /different lineages/,
    );
    expect(() => computeStageDrift({ summaries: [...base, summary(400, {}, { judgeModel: 'other' })] })).toThrow(
      /mixes judge models/,
    );
    expect(() => computeStageDrift({ summaries: [...base, summary(200, {})] })).toThrow(/two summaries for step 200/);
  });

  it('rejects NaN, inverted intervals and a topic whose text changes', () => {
    const nan = riseAndPlateau();
    (nan[2] as CheckpointSummary).topics.imm = topic('immigration', [Number.NaN, 0.5, 0.7], [0.3, 0.2, 0.4], [0.1, 0, 0.2]);
    expect(() => computeStageDrift({ summaries: nan })).toThrow(/step 200 topic "imm" stance support: v\/ci95 must be finite/);

    const inverted = riseAndPlateau();
    (inverted[1] as CheckpointSummary).topics.imm = topic('immigration', [0.5, 0.6, 0.4], [0.3, 0.2, 0.4], [0.1, 0, 0.2]);
    expect(() => computeStageDrift({ summaries: inverted })).toThrow(/lower bound 0.6 is above the upper bound 0.4/);

    const renamed = riseAndPlateau();
    const last = renamed[3] as CheckpointSummary;
    last.topics.imm = { ...(last.topics.imm as TopicSummary), topic: 'closed borders' };
    expect(() => computeStageDrift({ summaries: renamed })).toThrow(/changes topic text/);
  });

  it('never emits NaN or Infinity', () => {
    const drift = computeStageDrift({ summaries: riseAndPlateau() });
    const text = JSON.stringify(drift);
    expect(text).not.toMatch(/null|NaN|Infinity/);
  });
});

describe('summariseTopic / summariseCheckpoint', () => {
  const P = (support: number, neutral: number, oppose: number): StanceProbs => ({ support, neutral, oppose });
  const judgments: Judgment[] = [
    { promptId: 'p1', category: 'abortion', sample: 0, probs: P(0.6, 0.3, 0.1) },
    { promptId: 'p1', category: 'abortion', sample: 1, probs: P(0.8, 0.1, 0.1) },
    { promptId: 'p1', category: 'abortion', sample: 2, probs: null },
    { promptId: 'p2', category: 'abortion', sample: 0, probs: P(0.2, 0.5, 0.3) },
    { promptId: 'p2', category: 'abortion', sample: 1, probs: P(0.4, 0.3, 0.3) },
    { promptId: 'p3', category: 'abortion', sample: 0, probs: null },
    { promptId: 'p3', category: 'abortion', sample: 1, probs: null },
    { promptId: 'p4', category: 'abortion', sample: 0, probs: P(0.5, 0.3, 0.2) },
    { promptId: 'q1', category: 'climate', sample: 0, probs: null },
  ];

  it('averages generations per prompt, then prompts (eq. 1), with t intervals over prompts', () => {
    const t = summariseTopic({ topic: 'abortion rights', judgments: judgments.filter((j) => j.category === 'abortion') });
    // p1 = mean((.6,.3,.1), (.8,.1,.1)) = (.7,.2,.1); p2 = (.3,.4,.3); p3 has no label; p4 = (.5,.3,.2)
    expect(t.prompts).toBe(3);
    expect(t.unlabelled).toBe(3);
    expect(t.perPrompt.map((p) => [p.promptId, p.samples])).toEqual([
      ['p1', 2],
      ['p2', 2],
      ['p4', 1],
    ]);
    expect(t.perPrompt[0]?.p.support).toBeCloseTo(0.7, 12);
    expect(t.perPrompt[0]?.p.neutral).toBeCloseTo(0.2, 12);
    // v = mean over prompts = ((.7+.3+.5)/3, (.2+.4+.3)/3, (.1+.3+.2)/3) = (.5, .3, .2)
    expect(t.v.support).toBeCloseTo(0.5, 12);
    expect(t.v.neutral).toBeCloseTo(0.3, 12);
    expect(t.v.oppose).toBeCloseTo(0.2, 12);
    // support: s = 0.2, se = 0.2/√3 = 0.11547005, t_{0.975,2} = 4.3026527 → half 0.4968275
    expect(t.ci95.support[0]).toBeCloseTo(0.5 - 0.4968275, 6);
    expect(t.ci95.support[1]).toBeCloseTo(0.5 + 0.4968275, 6);
    // neutral and oppose: s = 0.1, se = 0.05773503 → half 0.2484137
    expect(t.ci95.neutral[0]).toBeCloseTo(0.3 - 0.2484137, 6);
    expect(t.ci95.oppose[1]).toBeCloseTo(0.2 + 0.2484137, 6);
  });

  it('an all-unlabelled topic keeps its count with prompts 0 and zero v', () => {
    const t = summariseTopic({ topic: 'climate', judgments: judgments.filter((j) => j.category === 'climate') });
    expect(t).toEqual({
      topic: 'climate',
      prompts: 0,
      unlabelled: 1,
      v: { support: 0, neutral: 0, oppose: 0 },
      perPrompt: [],
      ci95: { support: [0, 0], neutral: [0, 0], oppose: [0, 0] },
    });
  });

  it('summariseCheckpoint groups by category, lists every mapped category, and is order-independent', () => {
    const input = {
      lineage: 'lin',
      stageId: 'sft',
      step: 100,
      totalSteps: 300,
      judgeModel: 'gpt-4o',
      promptVersion: 'v1',
      topics: { climate: 'climate action', abortion: 'abortion rights', religion: 'religion in public life' },
    };
    const a = summariseCheckpoint({ ...input, judgments });
    const b = summariseCheckpoint({ ...input, judgments: [...judgments].reverse() });
    expect(b).toEqual(a);
    expect(Object.keys(a.topics)).toEqual(['abortion', 'climate', 'religion']);
    expect(a.topics.abortion?.prompts).toBe(3);
    expect(a.topics.climate?.unlabelled).toBe(1);
    expect(a.topics.religion).toMatchObject({ prompts: 0, unlabelled: 0 });
    expect(a.topics.abortion?.topic).toBe('abortion rights');
  });

  it('rejects unknown categories, duplicate samples and non-probabilities', () => {
    const base = { lineage: 'l', stageId: 's', step: 0, totalSteps: 1, judgeModel: 'j', promptVersion: 'v', topics: { abortion: 'a' } };
    expect(() => summariseCheckpoint({ ...base, judgments })).toThrow(/category "climate", which is not in the topic map/);
    const dup = [judgments[0] as Judgment, judgments[0] as Judgment];
    expect(() => summariseTopic({ topic: 'a', judgments: dup })).toThrow(/duplicate judgment for prompt p1 sample 0/);
    const bad: Judgment[] = [{ promptId: 'p', category: 'abortion', sample: 0, probs: P(1.2, 0, 0) }];
    expect(() => summariseTopic({ topic: 'a', judgments: bad })).toThrow(/probs.support = 1.2 is not a probability/);
  });
});

describe('formatDriftTable (worker/driftTable.ts)', () => {
  it('prints one row per stage × topic × stance with signed M and η to 2 decimals', () => {
    const text = formatDriftTable([computeStageDrift({ summaries: riseAndPlateau() })]);
    const lines = text.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^stage\s+topic\s+stance\s+M\s+η\s+steps$/);
    expect(lines).toHaveLength(2 + 3);
    expect(lines[2]).toMatch(/^sft\s+imm\s+support\s+\+0\.40\s+0\.33\s+0\.\.300$/);
    expect(lines[3]).toMatch(/^sft\s+imm\s+neutral\s+-0\.40\s+0\.33\s+0\.\.300$/);
    expect(lines[4]).toMatch(/^sft\s+imm\s+oppose\s+\+0\.00\s+0\.00\s+0\.\.300$/);
  });

  it('says so when there is nothing to show', () => {
    expect(formatDriftTable([])).toContain('(no topics with labelled generations)');
  });
});

describe('parseSummariesFile (common/summariesFile.ts)', () => {
  const summaries = riseAndPlateau();

  it('accepts a JSON array, {summaries}, a single object and JSONL', () => {
    expect(parseSummariesFile(JSON.stringify(summaries, null, 2))).toEqual(summaries);
    expect(parseSummariesFile(JSON.stringify({ summaries }))).toEqual(summaries);
    expect(parseSummariesFile(JSON.stringify(summaries[0], null, 2))).toEqual([summaries[0]]);
    const jsonl = `${summaries.map((s) => JSON.stringify(s)).join('\n')}\n\n`;
    expect(parseSummariesFile(jsonl)).toEqual(summaries);
    expect(parseSummariesFile(`\uFEFF${jsonl.replace(/\n/g, '\r\n')}`)).toEqual(summaries);
  });

  it('names the line of broken JSONL', () => {
    const lines = summaries.map((s) => JSON.stringify(s));
    lines[1] = '{"lineage": "lin", oops';
    expect(() => parseSummariesFile(lines.join('\n'))).toThrow(/line 2: invalid JSON/);
  });

  it('names the entry and field of a schema violation', () => {
    const bad = JSON.parse(JSON.stringify(summaries)) as Array<Record<string, unknown>>;
    const third = bad[2] as { topics: { imm: { v: { support: unknown } } } };
    third.topics.imm.v.support = 'high';
    expect(() => parseSummariesFile(JSON.stringify(bad))).toThrow(/entry 2: topics\.imm\.v\.support: /);
    const noStep = summaries.map(({ step: _step, ...rest }) => JSON.stringify(rest)).join('\n');
    expect(() => parseSummariesFile(noStep)).toThrow(/line 1: step: /);
  });

  it('rejects empty files, broken arrays and a non-array "summaries"', () => {
    expect(() => parseSummariesFile('  \n')).toThrow(/empty/);
    expect(() => parseSummariesFile('[{"a": 1},')).toThrow(/not valid JSON/);
    expect(() => parseSummariesFile('{"summaries": 3}')).toThrow(/"summaries" must be an array/);
    expect(() => parseSummariesFile('42')).toThrow(/expected a JSON array/);
  });
});

describe('groupSummariesByStage', () => {
  it('keeps stages apart by lineage and stage id, in order of first appearance', () => {
    const sft = riseAndPlateau();
    const dpo = riseAndPlateau().map((s) => ({ ...s, stageId: 'dpo' }));
    const otherLineage = riseAndPlateau().map((s) => ({ ...s, lineage: 'lin2' }));
    const mixed = [dpo[0], sft[0], otherLineage[0], sft[1], dpo[1], otherLineage[1]] as CheckpointSummary[];
    const groups = groupSummariesByStage(mixed);
    expect(groups.map((g) => g.map((s) => `${s.lineage}/${s.stageId}@${s.step}`))).toEqual([
      ['lin/dpo@0', 'lin/dpo@100'],
      ['lin/sft@0', 'lin/sft@100'],
      ['lin2/sft@0', 'lin2/sft@100'],
    ]);
  });

  it('does not merge "a/b" + "c" with "a" + "b/c"', () => {
    const one = summary(0, {}, { lineage: 'a/b', stageId: 'c' });
    const two = summary(0, {}, { lineage: 'a', stageId: 'b/c' });
    expect(groupSummariesByStage([one, two])).toHaveLength(2);
  });
});
