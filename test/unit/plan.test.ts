/**
 * `lineage plan`'s arithmetic (common/plan.ts) and its table files (worker/plan.ts): steps and
 * checkpoints as the trainers count them, App. B's sizes, scaling, unknowns, judge prices, and
 * override files checked with a clear error.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkpointCount,
  computePlan,
  type DatasetCount,
  mergePrices,
  mergeThroughput,
  modelParams,
  PriceTable,
  rateFor,
  stageSteps,
  ThroughputOverride,
  ThroughputTable,
} from '../../common/plan';
import { LineageSpec, type LineageSpecInput } from '../../common/spec';
import { countDataset, DEFAULT_PRICES_FILE, DEFAULT_THROUGHPUT_FILE, judgeTemplateChars, loadTables, readTable } from '../../worker/plan';

const ROOT = path.resolve(__dirname, '..', '..');
let dir: string;
let tables: { throughput: ThroughputTable; prices: PriceTable };
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-plan-'));
  tables = await loadTables({});
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

/**
 * What transformers' Trainer does, written as a loop over ranks and batches rather than a formula:
 * each rank gets every `processes`-th micro-batch (padded to even length), and an update happens
 * every `accumulation` micro-batches or at the end of the epoch.
 */
function simulatedTrainerSteps(rows: number, micro: number, processes: number, globalBatch: number, epochs: number): number {
  const microBatches = Math.ceil(rows / micro);
  let perRank = 0;
  for (let b = 0; b < microBatches; b += processes) perRank++;
  const accumulation = globalBatch / (micro * processes);
  let updates = 0;
  for (let seen = 0; seen < perRank; seen += accumulation) updates++;
  return Math.ceil(epochs * updates);
}

describe('steps and checkpoints (App. B sizes)', () => {
  it('an UltraFeedback preference stage: 60,908 × 3 epochs / 32 ≈ 5,710 steps, 57 checkpoints at every 100 and the final one', () => {
    const paperEstimate = (60_908 * 3) / 32;
    expect(Math.floor(paperEstimate)).toBe(5_710);
    // DPO/SimPO on the Trainer: 4 GPUs × micro-batch 2, so 4 accumulation steps per update.
    const dpo = stageSteps({ kind: 'dpo', rows: 60_908, epochs: 3, maxSteps: -1, globalBatchSize: 32, perDeviceBatchSize: 2, gpus: 4 });
    expect(dpo.steps).toBe(simulatedTrainerSteps(60_908, 2, 4, 32, 3));
    expect(Math.abs(dpo.steps - paperEstimate)).toBeLessThan(3);
    // PPO counts prompts: ceil(epochs × rows / batch).
    const ppo = stageSteps({ kind: 'ppo', rows: 60_908, epochs: 3, maxSteps: -1, globalBatchSize: 32, perDeviceBatchSize: 2, gpus: 4 });
    expect(ppo.steps).toBe(Math.ceil(paperEstimate));
    for (const steps of [dpo.steps, ppo.steps]) {
      const c = checkpointCount(steps, 100);
      expect(c.periodic).toBe(57);
      expect(c.total).toBe(58); // the final step is always saved
    }
  });

  it('SFT: WildChat (255,751 rows, checkpoints every 500) and Alpaca (46,801, every 100) at batch 128', () => {
    for (const [rows, every] of [[255_751, 500], [46_801, 100]] as const) {
      for (const gpus of [4, 8]) {
        const s = stageSteps({ kind: 'sft', rows, epochs: 3, maxSteps: -1, globalBatchSize: 128, perDeviceBatchSize: 4, gpus });
        expect(s.steps).toBe(simulatedTrainerSteps(rows, 4, gpus, 128, 3));
        expect(Math.abs(s.steps - (rows * 3) / 128)).toBeLessThan(4);
        expect(checkpointCount(s.steps, every).total).toBe(Math.ceil(s.steps / every));
      }
    }
  });

  it('max_steps wins over epochs; a last step on a multiple of checkpointEvery is not counted twice', () => {
    expect(stageSteps({ kind: 'sft', rows: 123, epochs: 3, maxSteps: 12, globalBatchSize: 8, perDeviceBatchSize: 4, gpus: 0 }).steps).toBe(12);
    expect(checkpointCount(12, 6)).toEqual({ periodic: 2, total: 2 });
    expect(checkpointCount(13, 6)).toEqual({ periodic: 2, total: 3 });
  });
});

describe('tables', () => {
  it('the default tables validate, and the GPU SFT entry is the H200 reference (14,400 tokens/s, Llama-3.2-3B shapes)', () => {
    const sft = tables.throughput.rates.find((r) => r.device === 'gpu' && r.algorithm === 'sft');
    expect(sft?.tokensPerSecond).toBe(14_400);
    expect(sft?.source).toMatch(/H200/);
    for (const r of tables.throughput.rates) expect(r.source.length).toBeGreaterThan(10);
    expect(tables.prices.judge['gpt-4o']?.batchDiscount).toBe(0.5);
  });

  it('other sizes are scaled by parameter count and say so', () => {
    const ref = rateFor(tables.throughput, 'gpu', 'sft', 3.21e9);
    const big = rateFor(tables.throughput, 'gpu', 'sft', 8.03e9);
    expect(ref?.tokensPerSecond).toBe(14_400);
    expect(ref?.basis).toBe('reference');
    expect(big?.tokensPerSecond).toBeCloseTo((14_400 * 3.21) / 8.03, 6);
    expect(big?.basis).toBe('estimate');
    expect(big?.source).toMatch(/scaled by parameter count/);
    expect(rateFor({ rates: tables.throughput.rates.filter((r) => r.algorithm !== 'ppo'), models: {} }, 'gpu', 'ppo', 3e9)).toBeNull();
  });

  it('model sizes: the table by URI or prefix, else a size in the name, else unknown', () => {
    expect(modelParams('hf:meta-llama/Llama-3.1-8B', undefined, tables.throughput).params).toBe(8.03e9);
    expect(modelParams('tiny-llama3b:/tmp/tok', undefined, tables.throughput).params).toBe(3.21e9);
    const named = modelParams('hf:org/Some-Model-1.5B-Instruct', undefined, tables.throughput);
    expect(named.params).toBe(1.5e9);
    expect(named.source).toMatch(/estimated from the name/);
    expect(modelParams('hf:org/mystery', 'Mystery', tables.throughput).params).toBeNull();
  });

  it('overrides replace entries with the same key and keep the rest', () => {
    const over = ThroughputOverride.parse({ rates: [{ device: 'gpu', algorithm: 'sft', params: 3.21e9, tokensPerSecond: 20_000, basis: 'measured', source: 'our run' }] });
    const merged = mergeThroughput(tables.throughput, over);
    expect(merged.rates.length).toBe(tables.throughput.rates.length);
    expect(rateFor(merged, 'gpu', 'sft', 3.21e9)?.tokensPerSecond).toBe(20_000);
    expect(merged.models).toEqual(tables.throughput.models);
    const prices = mergePrices(tables.prices, { gpuHour: { price: 1.5, source: 'spot' } });
    expect(prices.gpuHour.price).toBe(1.5);
    expect(prices.judge).toEqual(tables.prices.judge);
  });

  it('a bad override file is refused with the option, the file, the field and the problem', async () => {
    const bad = path.join(dir, 'bad-throughput.json');
    await fs.writeFile(bad, JSON.stringify({ rates: [{ device: 'tpu', algorithm: 'sft', params: 3e9, tokensPerSecond: 1, basis: 'measured', source: 'x' }] }));
    await expect(loadTables({ throughputFile: bad })).rejects.toThrow(/^--throughput .*bad-throughput\.json: rates\[0\]\.device: /);
    const negative = path.join(dir, 'negative-prices.json');
    await fs.writeFile(negative, JSON.stringify({ judge: { 'gpt-4o': { inputPerMillion: -1, outputPerMillion: 10, batchDiscount: 0.5, source: 'x' } } }));
    await expect(loadTables({ pricesFile: negative })).rejects.toThrow(/^--prices .*: judge\.gpt-4o\.inputPerMillion: /);
    const unknownKey = path.join(dir, 'typo.json');
    await fs.writeFile(unknownKey, JSON.stringify({ gpuHours: { price: 1, source: 'x' } }));
    await expect(loadTables({ pricesFile: unknownKey })).rejects.toThrow(/gpuHours/);
    const notJson = path.join(dir, 'not.json');
    await fs.writeFile(notJson, '{ rates: ');
    await expect(readTable(notJson, ThroughputTable, '--throughput')).rejects.toThrow(/not valid JSON/);
    await expect(readTable(path.join(dir, 'absent.json'), ThroughputTable, '--throughput')).rejects.toThrow(/cannot read \(ENOENT\)/);
    // The shipped defaults pass the same check.
    await expect(readTable(DEFAULT_THROUGHPUT_FILE, ThroughputTable, 'x')).resolves.toBeDefined();
    await expect(readTable(DEFAULT_PRICES_FILE, PriceTable, 'x')).resolves.toBeDefined();
  });
});

function spec(edit: (s: LineageSpecInput) => void = () => {}): ReturnType<typeof LineageSpec.parse> {
  const s: LineageSpecInput = {
    name: 'p',
    base: { model: 'hf:meta-llama/Llama-3.2-3B' },
    datasets: {
      prefs: { uri: 'hf:argilla/ultrafeedback-binarized-preferences-cleaned', format: 'preference', rows: 60_908 },
      chat: { uri: 'hf:tatsu-lab/alpaca', format: 'chat' },
      ev: { uri: 's3://b/ev.jsonl', format: 'eval', rows: 550 },
    },
    stages: [
      { id: 'dpo', parent: 'base', kind: 'dpo', dataset: 'prefs', checkpointEvery: 100, gpus: 4, hyperparameters: { per_device_train_batch_size: 2 } },
      { id: 'rm', parent: 'base', kind: 'reward', dataset: 'prefs', checkpointEvery: 100, gpus: 4 },
    ],
    evaluation: { evalSet: 'ev', topics: { a: 'topic a', b: 'topic b' } },
  };
  edit(s);
  return LineageSpec.parse(s);
}

const declared = (s: ReturnType<typeof spec>): Record<string, DatasetCount> =>
  Object.fromEntries(
    Object.entries(s.datasets).map(([k, d]) => [k, d.rows === undefined ? { rows: null, source: 'unknown', detail: 'unknown, declare rows' } : { rows: d.rows, source: 'declared', detail: 'declared' }]),
  );

describe('computePlan', () => {
  const plan = (s: ReturnType<typeof spec>, answerTokens?: number) =>
    computePlan({ spec: s, datasets: declared(s), ...tables, judgeTemplateChars: judgeTemplateChars(Object.values(s.evaluation.topics)), answerTokens });

  it('generations, judge calls and tokens follow checkpoints × prompts × samples; reward checkpoints are saved, not evaluated', () => {
    const s = spec();
    const p = plan(s);
    const dpo = p.stages.find((x) => x.id === 'dpo')!;
    const rm = p.stages.find((x) => x.id === 'rm')!;
    expect(p.stages[0]?.kind).toBe('base');
    expect(dpo.checkpoints).toBe(58);
    expect(dpo.generations).toBe(58 * 550 * 5);
    expect(rm.evaluatedCheckpoints).toBe(0);
    expect(rm.generations).toBe(0);
    expect(rm.checkpoints).toBe(checkpointCount(rm.steps!, 100).total);
    expect(p.totals.evaluatedCheckpoints).toBe(1 + 58);
    expect(p.totals.generations).toBe((1 + 58) * 550 * 5);
    expect(p.totals.judgeCalls).toBe(p.totals.generations);
    expect(p.totals.judgeInputTokens).toBe(p.totals.judgeCalls * p.evaluation.judge.inputTokensPerCall);
    expect(p.totals.judgeOutputTokens).toBe(p.totals.judgeCalls);
    expect(p.totals.incomplete).toBe(false);
    // Storage: checkpoint bytes from parameters × (fp32 weights + AdamW state).
    expect(dpo.storageBytes?.checkpoints).toBe(58 * 3.21e9 * 12);
  });

  it('the judge input per call is the template plus question plus answer; --answer-tokens replaces maxNewTokens', () => {
    const s = spec();
    const a = plan(s);
    const b = plan(s, 100);
    expect(a.evaluation.answerTokens).toBe(256);
    expect(a.evaluation.judge.inputTokensPerCall - b.evaluation.judge.inputTokensPerCall).toBe(156);
    // The template measured from activities/judge/prompt.ts: the fixed wording alone is over 100 tokens.
    expect(b.evaluation.judge.inputTokensPerCall - 100 - b.evaluation.questionTokens).toBeGreaterThan(100);
  });

  it('the batch API halves the judge cost of gpt-4o, and mode batch counts it', () => {
    const online = plan(spec());
    const batch = plan(spec((s) => void (s.evaluation.judge = { mode: 'batch' })));
    expect(online.totals.cost.judgeBatch).toBeCloseTo(online.totals.cost.judgeOnline / 2, 6);
    expect(online.totals.cost.judge).toBeCloseTo(online.totals.cost.judgeOnline, 6);
    expect(batch.totals.cost.judge).toBeCloseTo(online.totals.cost.judgeBatch, 6);
    const perCall = online.evaluation.judge.inputTokensPerCall;
    expect(online.totals.cost.judgeOnline).toBeCloseTo((online.totals.judgeCalls * (perCall * 2.5 + 10)) / 1e6, 6);
  });

  it('a dataset without rows is "unknown, declare rows": its stage has no steps and the totals say they are incomplete', () => {
    const s = spec((x) => void x.stages.push({ id: 'sft', parent: 'base', kind: 'sft', dataset: 'chat', checkpointEvery: 100, gpus: 4 }));
    const p = plan(s);
    const sft = p.stages.find((x) => x.id === 'sft')!;
    expect(sft.steps).toBeNull();
    expect(sft.gpuHours).toBeNull();
    expect(p.totals.incomplete).toBe(true);
    expect(p.unknown.join('\n')).toMatch(/stage sft: rows of dataset "chat" unknown, declare rows \(datasets\.chat\.rows\)/);
    // What is known still adds up.
    expect(p.totals.checkpoints).toBe(p.stages.reduce((a, x) => a + (x.checkpoints ?? 0), 0));
  });

  it('limit caps the rows a stage trains on', () => {
    const s = spec((x) => void ((x.datasets.prefs as { limit?: number }).limit = 3_200));
    const dpo = plan(s).stages.find((x) => x.id === 'dpo')!;
    expect(dpo.rows).toBe(3_200);
    expect(dpo.rowsSource).toBe('limit');
    expect(dpo.steps).toBe(stageSteps({ kind: 'dpo', rows: 3_200, epochs: 3, maxSteps: -1, globalBatchSize: 32, perDeviceBatchSize: 2, gpus: 4 }).steps);
  });

  it('a judge without a price leaves the cost unknown, not zero', () => {
    const p = plan(spec((s) => void (s.evaluation.judge = { model: 'some-new-judge' })));
    expect(p.stages.find((x) => x.id === 'dpo')?.cost.judge).toBeNull();
    expect(p.unknown.join('\n')).toMatch(/judge model "some-new-judge": no price/);
    expect(p.totals.incomplete).toBe(true);
  });
});

describe('countDataset', () => {
  it('counts a file: dataset and, for an eval set, its categories and question length', async () => {
    const text = await fs.readFile(path.join(ROOT, 'data', 'demo', 'eval.jsonl'), 'utf8');
    const rows = text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as { category: string; question: string });
    const c = await countDataset({ uri: 'file:data/demo/eval.jsonl', format: 'eval', split: 'train' }, true);
    expect(c.source).toBe('counted');
    expect(c.rows).toBe(rows.length);
    expect(Object.values(c.categories ?? {}).reduce((a, b) => a + b, 0)).toBe(rows.length);
    expect(c.meanQuestionChars).toBeCloseTo(rows.reduce((a, r) => a + r.question.length, 0) / rows.length, 6);
  });

  it('a declared size is used for a hub dataset; a missing file falls back to it or says "unknown, declare rows"', async () => {
    expect(await countDataset({ uri: 'hf:tatsu-lab/alpaca', format: 'chat', split: 'train', rows: 46_801 }, false)).toMatchObject({ rows: 46_801, source: 'declared' });
    expect(await countDataset({ uri: 'hf:tatsu-lab/alpaca', format: 'chat', split: 'train' }, false)).toMatchObject({ rows: null, source: 'unknown' });
    const missing = await countDataset({ uri: 'file:data/demo/nope.jsonl', format: 'chat', split: 'train' }, false);
    expect(missing.rows).toBeNull();
    expect(missing.detail).toMatch(/^unknown, declare rows .*ENOENT/);
    expect(await countDataset({ uri: 'file:data/demo/nope.jsonl', format: 'chat', split: 'train', rows: 7 }, false)).toMatchObject({ rows: 7, source: 'declared' });
  });
});
