/**
 * `lineage plan`'s costing of built datasets (common/plan.ts planBuilds, worker/plan.ts): the calls
 * each builder makes follow from the spec (rows, limits, per-category counts, clustering, sides of a
 * pair), tokens from the builders' own prompts, cost from the price table or "no price for <model>",
 * and the paper's recipe sizes for datasets that declare none.
 */
import { describe, expect, it } from 'vitest';
import {
  ASSUMED_CONVERSATION_TOKENS,
  ASSUMED_PROMPT_TOKENS,
  ASSUMED_QUESTION_TOKENS,
  ASSUMED_STATEMENT_TOKENS,
  CHARS_PER_TOKEN,
  CHAT_FRAMING_TOKENS,
  callCost,
  computePlan,
  type DatasetCount,
  NAMING_QUESTIONS,
  NGRAM_TOKENS,
  planBuilds,
  PriceOverride,
  type PriceTable,
  mergePrices,
} from '../../common/plan';
import { LineageSpec, type LineageSpecInput } from '../../common/spec';
import { buildTemplates, DEFAULT_SIZES_FILE, judgeTemplateChars, loadTables, readTable, RecipeSizes, withRecipeSize } from '../../worker/plan';

const PRICE = { inputPerMillion: 2, outputPerMillion: 8, batchDiscount: 0.5, source: 'test price' };

function prices(extra: Partial<PriceTable> = {}): PriceTable {
  return {
    currency: 'USD',
    gpuHour: { price: 3, source: 't' },
    cpuHour: { price: 0, source: 't' },
    storageGbMonth: { price: 0.02, source: 't' },
    judge: { 'judge-m': PRICE },
    generator: {},
    ...extra,
  };
}

const TOPICS = { a: 'topic a', b: 'topic b', c: 'topic c' };

/** A spec building all four recipes from declared sources; `edit` changes it before parsing. */
function spec(edit: (s: LineageSpecInput) => void = () => {}): LineageSpec {
  const s: LineageSpecInput = {
    name: 'b',
    base: { model: 'hf:meta-llama/Llama-3.2-3B' },
    datasets: {
      statements: { uri: 'hf:x/prism', format: 'prompts', rows: 1_000 },
      chat: { uri: 'hf:x/chat', format: 'chat', rows: 700 },
      prefs: { uri: 'hf:x/prefs', format: 'preference', rows: 400 },
      more: { uri: 'hf:x/more', format: 'preference', rows: 100 },
      both: { build: 'concat', format: 'preference', from: { a: 'prefs', b: 'more' } },
      ev: { build: 'v-prism', from: { statements: 'statements' }, rows: 30, generator: { model: 'judge-m', maxTokens: 64 } },
      pairs: { build: 'synthetic-pairs', from: { prompts: 'prefs', questions: 'ev' }, promptsPerCategory: 20, rows: 55, generator: { model: 'gen-m', maxTokens: 300 } },
      'chat-stances': { build: 'stance-analysis', from: { dataset: 'chat', questions: 'ev' } },
      'pair-stances': { build: 'stance-analysis', from: { dataset: 'pairs', questions: 'ev' }, limit: 40 },
    },
    stages: [{ id: 'dpo', parent: 'base', kind: 'dpo', dataset: 'pairs', alignment: 'support-aligned', checkpointEvery: 100, gpus: 1 }],
    evaluation: { evalSet: 'ev', topics: TOPICS, judge: { model: 'judge-m' } },
  };
  edit(s);
  return LineageSpec.parse(s);
}

/** Declared rows as counts; built entries without rows unknown (as worker/plan.ts does). */
const declared = (s: LineageSpec, extra: Record<string, Partial<DatasetCount>> = {}): Record<string, DatasetCount> =>
  Object.fromEntries(
    Object.entries(s.datasets).map(([k, d]) => [k, { ...(d.rows === undefined ? { rows: null, source: 'unknown' as const, detail: 'unknown' } : { rows: d.rows, source: 'declared' as const, detail: 'declared' }), ...extra[k] }]),
  );

const TEMPLATES = { rephrase: 400, naming: 240, valueCheck: 320, stanceResponse: { system: 600, user: 120 }, conversationJudge: 800 };
const JUDGE_TEMPLATE_TOKENS = 200;

function run(s: LineageSpec, p: PriceTable = prices(), counts = declared(s)) {
  return planBuilds({ spec: s, datasets: counts, prices: p, templates: TEMPLATES, judgeTemplateTokens: JUDGE_TEMPLATE_TOKENS });
}
const byName = (r: ReturnType<typeof run>, name: string) => r.builds.find((b) => b.name === name)!;
const step = (r: ReturnType<typeof run>, name: string, s: string) => byName(r, name).calls.find((c) => c.step === s)!;

describe('planBuilds: calls follow from the spec', () => {
  it('lists every build in build order (inputs before what is built from them)', () => {
    const r = run(spec());
    const order = r.builds.map((b) => b.name);
    expect(order.sort()).toEqual(['both', 'chat-stances', 'ev', 'pair-stances', 'pairs'].sort());
    const at = (n: string) => r.builds.findIndex((b) => b.name === n);
    expect(at('ev')).toBeLessThan(at('pairs'));
    expect(at('pairs')).toBeLessThan(at('pair-stances'));
  });

  it('v-prism: one rephrasing per statement, ≤ statements / minClusterSize namings, ≤ one value check per statement; limit and settings change them', () => {
    const r = run(spec());
    expect(step(r, 'ev', 'rephrase statements')).toMatchObject({ role: 'generator', model: 'judge-m', calls: 1_000, bound: false, outputTokensPerCall: 64 });
    expect(step(r, 'ev', 'name clusters')).toMatchObject({ calls: 100, bound: true });
    expect(step(r, 'ev', 'value-laden check')).toMatchObject({ calls: 1_000, bound: true });
    expect(byName(r, 'ev')).toMatchObject({ generatorCalls: 2_100, judgeCalls: 0, inputRows: 1_000 });
    // Tokens: the builder's system prompt + framing + the (assumed) text.
    expect(step(r, 'ev', 'rephrase statements').inputTokensPerCall).toBe(400 / CHARS_PER_TOKEN + CHAT_FRAMING_TOKENS + ASSUMED_STATEMENT_TOKENS);
    expect(step(r, 'ev', 'name clusters').inputTokensPerCall).toBe(240 / CHARS_PER_TOKEN + CHAT_FRAMING_TOKENS + 10 * NGRAM_TOKENS + NAMING_QUESTIONS * ASSUMED_QUESTION_TOKENS);
    expect(step(r, 'ev', 'value-laden check').inputTokens).toBe(1_000 * (320 / CHARS_PER_TOKEN + CHAT_FRAMING_TOKENS + ASSUMED_QUESTION_TOKENS));

    // A limit on the statements' entry, a larger minimum cluster and no value check.
    const s2 = spec((s) => {
      (s.datasets.statements as { limit?: number }).limit = 250;
      Object.assign(s.datasets.ev as object, { valueCheck: false, clustering: { minClusterSize: 25 } });
    });
    const r2 = run(s2);
    expect(step(r2, 'ev', 'rephrase statements').calls).toBe(250);
    expect(step(r2, 'ev', 'name clusters').calls).toBe(10);
    expect(step(r2, 'ev', 'value-laden check')).toBeUndefined();
    expect(byName(r2, 'ev').generatorCalls).toBe(260);
    expect(byName(r2, 'ev').inputDetail).toMatch(/limit 250 of 1,000/);
  });

  it('synthetic pairs: two responses and two stance checks per selected prompt, at most promptsPerCategory × categories and the candidates', () => {
    const r = run(spec());
    // 20 per category × 3 topics = 60 of 400 candidates.
    expect(byName(r, 'pairs').inputRows).toBe(60);
    expect(step(r, 'pairs', 'supporting and opposing responses')).toMatchObject({ role: 'generator', model: 'gen-m', calls: 120, bound: true, outputTokensPerCall: 300 });
    expect(step(r, 'pairs', 'stance-check responses')).toMatchObject({ role: 'judge', model: 'judge-m', calls: 120, outputTokensPerCall: 1 });
    // The judge reads the prompt as the question and the response (≤ maxTokens) as the answer.
    expect(step(r, 'pairs', 'stance-check responses').inputTokensPerCall).toBe(JUDGE_TEMPLATE_TOKENS + ASSUMED_PROMPT_TOKENS + 300);
    expect(step(r, 'pairs', 'supporting and opposing responses').inputTokensPerCall).toBe(600 / CHARS_PER_TOKEN + CHAT_FRAMING_TOKENS + ASSUMED_PROMPT_TOKENS);
    // The instruction in the user turn (small local models) is costed at its own length.
    const ru = run(spec((s) => Object.assign((s.datasets.pairs as { generator: object }).generator, { stanceInstruction: 'user' })));
    expect(step(ru, 'pairs', 'supporting and opposing responses').inputTokensPerCall).toBe(120 / CHARS_PER_TOKEN + CHAT_FRAMING_TOKENS + ASSUMED_PROMPT_TOKENS);
    // Fewer candidates than the cap: every candidate.
    const r2 = run(spec((s) => ((s.datasets.prefs as { limit?: number }).limit = 35)));
    expect(step(r2, 'pairs', 'supporting and opposing responses').calls).toBe(70);
    // More per category: more calls.
    const r3 = run(spec((s) => ((s.datasets.pairs as { promptsPerCategory?: number }).promptsPerCategory = 50)));
    expect(step(r3, 'pairs', 'stance-check responses').calls).toBe(300);
  });

  it('stance analysis: a bound of one judge call per chat row, two per pair, capped by the build\'s limit', () => {
    const r = run(spec());
    expect(step(r, 'chat-stances', 'judge datapoints')).toMatchObject({ role: 'judge', calls: 700, bound: true });
    // pairs: 55 declared rows, the build's limit 40, two sides each.
    expect(step(r, 'pair-stances', 'judge datapoints').calls).toBe(40 * 2);
    expect(byName(r, 'pair-stances').inputDetail).toMatch(/at most limit 40/);
    const r2 = run(spec((s) => delete (s.datasets['pair-stances'] as { limit?: number }).limit));
    expect(step(r2, 'pair-stances', 'judge datapoints').calls).toBe(55 * 2);
    // A counted input sizes the conversation from its mean line length.
    const s3 = spec();
    const r3 = run(s3, prices(), declared(s3, { chat: { meanRowChars: 2_000 } }));
    expect(step(r3, 'chat-stances', 'judge datapoints').inputTokensPerCall).toBe(800 / CHARS_PER_TOKEN + CHAT_FRAMING_TOKENS + 500);
    expect(step(r, 'chat-stances', 'judge datapoints').inputTokensPerCall).toBe(800 / CHARS_PER_TOKEN + CHAT_FRAMING_TOKENS + ASSUMED_CONVERSATION_TOKENS);
  });

  it('concat makes no calls and joins its inputs\' rows', () => {
    const b = byName(run(spec()), 'both');
    expect(b).toMatchObject({ calls: [], generatorCalls: 0, judgeCalls: 0, cost: 0, inputRows: 500 });
  });

  it('an input without rows leaves its build\'s calls unknown, not zero', () => {
    const r = run(spec((s) => delete (s.datasets.chat as { rows?: number }).rows));
    expect(step(r, 'chat-stances', 'judge datapoints').calls).toBeNull();
    expect(byName(r, 'chat-stances').cost).toBeNull();
    expect(r.totals.incomplete).toBe(true);
    expect(r.totals.unknown.join('\n')).toMatch(/build chat-stances: datapoints: at most rows of "chat" unknown/);
  });
});

describe('planBuilds: prices', () => {
  it('costs each call at its model\'s token prices; a generator without a price is "no price for <model>" and the totals say so', () => {
    const r = run(spec());
    const judge = step(r, 'pairs', 'stance-check responses');
    expect(judge.cost).toBeCloseTo(callCost(120, judge.inputTokensPerCall, 1, PRICE), 9);
    expect(judge.cost).toBeCloseTo((120 * judge.inputTokensPerCall * 2 + 120 * 8) / 1e6, 9);
    const gen = step(r, 'pairs', 'supporting and opposing responses');
    expect(gen.cost).toBeNull();
    expect(gen.price).toBe('no price for gen-m');
    expect(byName(r, 'pairs').cost).toBeNull();
    expect(r.totals.incomplete).toBe(true);
    expect(r.totals.unknown).toContain('build pairs: no price for gen-m (generator); add it to the generator prices of a --prices file');
    // Totals sum what is known.
    const known = r.builds.flatMap((b) => b.calls).reduce((a, c) => a + (c.cost ?? 0), 0);
    expect(r.totals.cost).toBeCloseTo(known, 9);
    expect(r.totals.generatorCalls).toBe(2_100 + 120);
    expect(r.totals.judgeCalls).toBe(120 + 700 + 80);
  });

  it('a generator price (the generator table, laid over with --prices) completes the cost; it wins over a judge entry of the same name', () => {
    const over = PriceOverride.parse({ generator: { 'gen-m': { inputPerMillion: 1, outputPerMillion: 1, batchDiscount: 0, source: 'ours' }, 'judge-m': { inputPerMillion: 0, outputPerMillion: 0, batchDiscount: 0, source: 'free as generator' } } });
    const r = run(spec(), mergePrices(prices(), over));
    const gen = step(r, 'pairs', 'supporting and opposing responses');
    expect(gen.cost).toBeCloseTo((gen.inputTokens! + gen.outputTokens!) / 1e6, 9);
    expect(step(r, 'ev', 'rephrase statements').cost).toBe(0);
    expect(step(r, 'pairs', 'stance-check responses').cost).toBeGreaterThan(0);
    expect(r.totals.incomplete).toBe(false);
  });
});

describe('computePlan with builds', () => {
  it('adds a builds section and totals without changing the stages\' totals', async () => {
    const tables = await loadTables({});
    const s = spec();
    const base = { spec: s, datasets: declared(s), throughput: tables.throughput, prices: tables.prices, judgeTemplateChars: judgeTemplateChars(Object.values(TOPICS)) };
    const p = computePlan({ ...base, buildTemplates: await buildTemplates(Object.values(TOPICS)) });
    expect(p.builds.map((b) => b.name)).toContain('pairs');
    expect(p.totals.judgeCalls).toBe(p.totals.generations);
    expect(p.totals.builds.judgeCalls).toBe(120 + 700 + 80);
    expect(p.totals.cost.withBuilds).toBeCloseTo(p.totals.cost.total + p.totals.builds.cost, 6);
    // The builders' own prompts are measured: longer than nothing.
    expect(p.builds.find((b) => b.name === 'ev')!.calls[0]!.inputTokensPerCall).toBeGreaterThan(CHAT_FRAMING_TOKENS + ASSUMED_STATEMENT_TOKENS + 20);
  });
});

describe('recipe sizes (data/plan/sizes.json)', () => {
  it('a recipe dataset without rows gets the paper\'s size; declared rows and counted files win; no recipe stays unknown', async () => {
    const sizes = await readTable(DEFAULT_SIZES_FILE, RecipeSizes, 'sizes');
    const unknown: DatasetCount = { rows: null, source: 'unknown', detail: 'unknown' };
    const prism = withRecipeSize({ uri: 'hf:HannahRoseKirk/prism-alignment', format: 'prompts', split: 'train', recipe: 'prism' }, unknown, sizes);
    expect(prism).toMatchObject({ rows: 8_100, source: 'paper' });
    expect(prism.detail).toMatch(/prism recipe: the paper/);
    expect(withRecipeSize({ uri: 'hf:tatsu-lab/alpaca', format: 'chat', split: 'train', recipe: 'alpaca' }, unknown, sizes).rows).toBe(46_801);
    const declaredCount: DatasetCount = { rows: 12, source: 'declared', detail: 'declared' };
    expect(withRecipeSize({ uri: 'hf:tatsu-lab/alpaca', format: 'chat', split: 'train', recipe: 'alpaca', rows: 12 }, declaredCount, sizes)).toBe(declaredCount);
    expect(withRecipeSize({ uri: 'hf:x/y', format: 'chat', split: 'train', recipe: 'columns' }, unknown, sizes)).toBe(unknown);
    expect(withRecipeSize({ uri: 'hf:x/y', format: 'chat', split: 'train' }, unknown, sizes)).toBe(unknown);
  });
});
