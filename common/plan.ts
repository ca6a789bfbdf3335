/**
 * `lineage plan`: what a lineage will cost before it starts — per stage its optimizer steps and
 * checkpoints, device-hours, generations, judge calls and tokens, money and storage, and the totals.
 * Pure: the worker side (worker/plan.ts) counts the datasets it can read, loads the tables
 * (data/plan/*.json, overridable) and measures the judge prompt; everything here is arithmetic on
 * what it is given. Every figure that is an estimate says so in `assumptions` or in its `source`.
 */
import { z } from 'zod';
import { BASE_STAGE_ID } from './config';
import { buildOrder, isBuilt, type BuiltDatasetSpec, type LineageSpec, type StageKind, type StageSpec } from './spec';

// ---------------------------------------------------------------------------------------------
// Tables (data/plan/throughput.json, data/plan/prices.json; --throughput / --prices override them)
// ---------------------------------------------------------------------------------------------

export const PLAN_ALGORITHMS = ['sft', 'reward', 'ppo', 'dpo', 'simpo', 'generate'] as const;
export type PlanAlgorithm = (typeof PLAN_ALGORITHMS)[number];

const Source = z.string().min(1).max(500);
const Params = z.number().positive().max(1e13);

export const ThroughputRate = z.strictObject({
  /** `gpu`: one GPU; `cpu`: one whole machine without GPUs (a stage with `gpus: 0`). */
  device: z.enum(['gpu', 'cpu']),
  algorithm: z.enum(PLAN_ALGORITHMS),
  /** Parameter count of the model the rate was taken on; other sizes are scaled by params ratio. */
  params: Params,
  tokensPerSecond: z.number().positive().max(1e9),
  basis: z.enum(['measured', 'reference', 'estimate']),
  source: Source,
});
export type ThroughputRate = z.infer<typeof ThroughputRate>;

export const ModelSize = z.strictObject({ params: Params, source: Source });

export const ThroughputTable = z.strictObject({
  $comment: z.string().optional(),
  rates: z.array(ThroughputRate).min(1).max(1000),
  /** Model URI → size; a key ending in ":" matches every URI that starts with it. */
  models: z.record(z.string().min(1).max(512), ModelSize),
});
export type ThroughputTable = z.infer<typeof ThroughputTable>;
/** What --throughput FILE may hold: any part of the table. */
export const ThroughputOverride = ThroughputTable.partial();
export type ThroughputOverride = z.infer<typeof ThroughputOverride>;

const Price = z.strictObject({ price: z.number().min(0).max(1e6), source: Source });
export const JudgePrice = z.strictObject({
  inputPerMillion: z.number().min(0).max(1e6),
  outputPerMillion: z.number().min(0).max(1e6),
  /** Fraction taken off by the provider's batch API (OpenAI: 0.5). */
  batchDiscount: z.number().min(0).max(1),
  source: Source,
});
export const PriceTable = z.strictObject({
  $comment: z.string().optional(),
  currency: z.string().min(1).max(10),
  gpuHour: Price,
  cpuHour: Price,
  storageGbMonth: Price,
  /** Judge model name (as in the spec's evaluation.judge.model) → token prices. */
  judge: z.record(z.string().min(1).max(200), JudgePrice),
  /**
   * Generator model name (a built dataset's generator.model) → token prices. A model missing here is
   * looked up in `judge` (token prices are the model's, whatever it is asked).
   */
  generator: z.record(z.string().min(1).max(200), JudgePrice).default({}),
});
export type PriceTable = z.infer<typeof PriceTable>;
export const PriceOverride = PriceTable.partial().extend({ generator: z.record(z.string().min(1).max(200), JudgePrice).optional() });
export type PriceOverride = z.infer<typeof PriceOverride>;

/** Defaults with an override laid over them: rates by (device, algorithm, params), models and judge prices by key. */
export function mergeThroughput(base: ThroughputTable, over: ThroughputOverride): ThroughputTable {
  const key = (r: ThroughputRate) => `${r.device}/${r.algorithm}/${r.params}`;
  const rates = new Map(base.rates.map((r) => [key(r), r] as const));
  for (const r of over.rates ?? []) rates.set(key(r), r);
  return { rates: [...rates.values()], models: { ...base.models, ...over.models } };
}

export function mergePrices(base: PriceTable, over: PriceOverride): PriceTable {
  return {
    currency: over.currency ?? base.currency,
    gpuHour: over.gpuHour ?? base.gpuHour,
    cpuHour: over.cpuHour ?? base.cpuHour,
    storageGbMonth: over.storageGbMonth ?? base.storageGbMonth,
    judge: { ...base.judge, ...over.judge },
    generator: { ...base.generator, ...over.generator },
  };
}

// ---------------------------------------------------------------------------------------------
// Fixed facts of this project's code that the estimates rest on
// ---------------------------------------------------------------------------------------------

/** The trainer loads weights in float32 (trainer/valuedrift_trainer/models.py) and saves them so. */
export const WEIGHT_BYTES_PER_PARAM = 4;
/** AdamW keeps two float32 moments per parameter; optimizer.pt is part of every stored checkpoint. */
export const OPTIMIZER_BYTES_PER_PARAM = 8;
/** The judge answers one token (`max_tokens: 1`, activities/judge/judgeAll.ts); logprobs cost nothing extra. */
export const JUDGE_OUTPUT_TOKENS = 1;
/** Rough characters per token of English text for GPT-style tokenizers. */
export const CHARS_PER_TOKEN = 4;
/** Chat framing of a two-message request (per-message and reply-priming tokens). */
export const CHAT_FRAMING_TOKENS = 7;
/** Question length when the eval set cannot be read (a V-PRISM question is one sentence or two). */
export const ASSUMED_QUESTION_TOKENS = 30;
/** Bytes of one generations.jsonl row besides the answer text (ids, category, counts, seed). */
export const GENERATION_ROW_OVERHEAD_BYTES = 200;
/** One cached judgment (stance probabilities, 20 top tokens with logprobs, model, version, time). */
export const JUDGMENT_BYTES = 1000;

// ---------------------------------------------------------------------------------------------
// Inputs from the worker side
// ---------------------------------------------------------------------------------------------

/** How many rows a dataset has, and how that is known. */
export interface DatasetCount {
  rows: number | null;
  /** `paper`: the paper's size for the entry's recipe (data/plan/sizes.json), when nothing is declared. */
  source: 'counted' | 'declared' | 'paper' | 'unknown';
  /** Where the count came from, or why there is none. */
  detail: string;
  /** Eval sets read from a file: rows per category and mean question length in characters. */
  categories?: Record<string, number>;
  meanQuestionChars?: number;
  /** Files that were counted: mean characters of a row's JSON line (sizes the text a build sends). */
  meanRowChars?: number;
}

export interface PlanInput {
  spec: LineageSpec;
  /** Every dataset of the spec by name. */
  datasets: Record<string, DatasetCount>;
  throughput: ThroughputTable;
  prices: PriceTable;
  /** Mean characters of the rendered judge messages with an empty question and response, over the spec's topics. */
  judgeTemplateChars: number;
  /** Mean answer tokens; default: evaluation.maxNewTokens (an upper bound). */
  answerTokens?: number;
  /** Lengths of the prompts the dataset builds send (worker/plan.ts measures them); zeros when absent. */
  buildTemplates?: BuildTemplates;
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

export interface PlanCost {
  compute: number | null;
  judgeOnline: number | null;
  judgeBatch: number | null;
  /** The judge cost of the spec's judge mode (online or batch). */
  judge: number | null;
  storagePerMonth: number;
  /** compute + judge; null when either is unknown. */
  total: number | null;
}

export interface PlanStorage {
  checkpoints: number;
  generations: number;
  judgments: number;
  total: number;
}

export interface PlanStage {
  id: string;
  kind: StageKind | 'base';
  parent: string | null;
  rewardStage: string | null;
  dataset: string | null;
  rows: number | null;
  rowsSource: DatasetCount['source'] | 'limit' | null;
  rowsDetail: string;
  epochs: number | null;
  maxSteps: number | null;
  globalBatchSize: number | null;
  perDeviceBatchSize: number | null;
  gpus: number;
  device: 'gpu' | 'cpu';
  stepsPerEpoch: number | null;
  steps: number | null;
  /** save_steps: a checkpoint every this many steps, plus the final step. */
  checkpointEvery: number | null;
  /** Checkpoints at multiples of checkpointEvery. */
  periodicCheckpoints: number | null;
  /** Checkpoints saved: the periodic ones and the final step when it is not one of them. */
  checkpoints: number | null;
  /** Checkpoints whose answers are sampled and judged (none for a reward model; the base once). */
  evaluatedCheckpoints: number | null;
  trainTokens: number | null;
  trainRate: { tokensPerSecond: number; basis: ThroughputRate['basis']; source: string } | null;
  trainHours: number | null;
  generateHours: number | null;
  gpuHours: number | null;
  cpuHours: number | null;
  generations: number | null;
  judgeCalls: number | null;
  judgeInputTokens: number | null;
  judgeOutputTokens: number | null;
  cost: PlanCost;
  storageBytes: PlanStorage | null;
  /** What this stage's figures could not be computed for. */
  unknown: string[];
}

export interface PlanTotals {
  stages: number;
  steps: number;
  checkpoints: number;
  evaluatedCheckpoints: number;
  generations: number;
  judgeCalls: number;
  judgeInputTokens: number;
  judgeOutputTokens: number;
  gpuHours: number;
  cpuHours: number;
  storageBytes: number;
  /** Stages (training and evaluation); `withBuilds` adds the dataset builds' generator and judge calls. */
  cost: { currency: string; compute: number; judgeOnline: number; judgeBatch: number; judge: number; total: number; storagePerMonth: number; withBuilds: number };
  /** True when some figure of the stages could not be computed: the totals then sum what is known. */
  incomplete: boolean;
  /** The dataset builds (`builds` of the plan): calls, tokens and cost; their own unknowns. */
  builds: PlanBuildTotals;
}

export interface Plan {
  lineage: string;
  base: { model: string; name: string; params: number | null; paramsSource: string };
  evaluation: {
    evalSet: string;
    prompts: number | null;
    promptsDetail: string;
    generationsPerPrompt: number;
    generationsPerCheckpoint: number | null;
    answerTokens: number;
    answerTokensSource: string;
    questionTokens: number;
    questionTokensSource: string;
    judge: { model: string; mode: 'online' | 'batch'; inputTokensPerCall: number; outputTokensPerCall: number; price: string | null };
  };
  /** The base model's evaluation, then every stage in the spec's order. */
  stages: PlanStage[];
  /** Built datasets (v-prism, synthetic-pairs, stance-analysis, concat) in build order: their generator and judge calls. */
  builds: PlanBuild[];
  totals: PlanTotals;
  assumptions: string[];
  /** Everything that is unknown, one line each ("stage sft: rows unknown, declare rows …"). */
  unknown: string[];
}

// ---------------------------------------------------------------------------------------------
// Arithmetic
// ---------------------------------------------------------------------------------------------

/**
 * Optimizer steps of a stage, as the code that trains it counts them.
 * - PPO (trainer/valuedrift_trainer/ppo.py): ceil(epochs × rows / global_batch_size).
 * - Trainer-based stages (transformers' Trainer): each of `processes` ranks sees
 *   ceil(ceil(rows / micro) / processes) micro-batches per epoch, an epoch is
 *   ceil(that / gradient_accumulation) updates, and the run ceil(epochs × updates per epoch).
 * `max_steps` > 0 overrides both.
 */
export function stageSteps(a: {
  kind: StageKind;
  rows: number;
  epochs: number;
  maxSteps: number;
  globalBatchSize: number;
  perDeviceBatchSize: number;
  gpus: number;
}): { steps: number; stepsPerEpoch: number } {
  const processes = Math.max(1, a.gpus);
  let perEpoch: number;
  if (a.kind === 'ppo') perEpoch = a.rows / a.globalBatchSize;
  else {
    const accumulation = Math.max(1, Math.round(a.globalBatchSize / (a.perDeviceBatchSize * processes)));
    const microBatches = Math.ceil(Math.ceil(a.rows / a.perDeviceBatchSize) / processes);
    perEpoch = Math.max(1, Math.ceil(microBatches / accumulation));
  }
  const steps = a.maxSteps > 0 ? a.maxSteps : Math.max(1, Math.ceil(a.epochs * perEpoch));
  return { steps, stepsPerEpoch: a.kind === 'ppo' ? Math.ceil(perEpoch) : perEpoch };
}

/** Checkpoints saved for `steps` steps at `every`: the multiples of `every`, and the last step. */
export function checkpointCount(steps: number, every: number): { periodic: number; total: number } {
  const periodic = Math.floor(steps / every);
  return { periodic, total: periodic + (steps % every === 0 ? 0 : 1) };
}

/** Sequences a training example costs: chosen and rejected for pairwise objectives. */
export function sequencesPerExample(kind: StageKind): number {
  return kind === 'reward' || kind === 'dpo' || kind === 'simpo' ? 2 : 1;
}

/** Stored bytes per parameter of one checkpoint: weights and optimizer state (PPO: policy and value model). */
export function checkpointBytesPerParam(kind: StageKind): number {
  const one = WEIGHT_BYTES_PER_PARAM + OPTIMIZER_BYTES_PER_PARAM;
  return kind === 'ppo' ? 2 * one : one;
}

/** A model's parameter count: the table (exact URI, then a prefix key ending in ":"), then a size in its name ("…-3B"). */
export function modelParams(uri: string, name: string | undefined, table: ThroughputTable): { params: number | null; source: string } {
  const exact = Object.hasOwn(table.models, uri) ? table.models[uri] : undefined;
  if (exact) return { params: exact.params, source: exact.source };
  const prefix = Object.entries(table.models).find(([k]) => k.endsWith(':') && uri.startsWith(k));
  if (prefix) return { params: prefix[1].params, source: prefix[1].source };
  for (const text of [name, uri]) {
    const matches = [...(text ?? '').matchAll(/(?:^|[^\w.])(\d+(?:\.\d+)?)([BM])(?![a-zA-Z])/g)];
    const m = matches[matches.length - 1];
    if (m) {
      const params = Number(m[1]) * (m[2] === 'B' ? 1e9 : 1e6);
      return { params, source: `estimated from the name "${text}"` };
    }
  }
  return { params: null, source: `unknown: add "${uri}" to the models of a --throughput file` };
}

/** The rate for a device, algorithm and size: the entry nearest in parameter count, scaled by params ratio. */
export function rateFor(table: ThroughputTable, device: 'gpu' | 'cpu', algorithm: PlanAlgorithm, params: number): PlanStage['trainRate'] {
  const candidates = table.rates.filter((r) => r.device === device && r.algorithm === algorithm);
  if (candidates.length === 0) return null;
  const distance = (r: ThroughputRate) => Math.abs(Math.log(r.params / params));
  const best = candidates.reduce((a, b) => (distance(b) < distance(a) ? b : a));
  const scale = best.params / params;
  const tokensPerSecond = best.tokensPerSecond * scale;
  const scaled = Math.abs(scale - 1) > 1e-9;
  return {
    tokensPerSecond,
    basis: scaled ? 'estimate' : best.basis,
    source: scaled ? `${formatCount(Math.round(best.tokensPerSecond))} tokens/s at ${formatParams(best.params)} scaled by parameter count (estimate) — ${best.source}` : best.source,
  };
}

const sumKnown = (xs: Array<number | null>): number => xs.reduce<number>((a, x) => a + (x ?? 0), 0);

/** How many eval prompts one checkpoint's evaluation samples (`promptsPerCategory` per category, or all). */
export function evalPrompts(count: DatasetCount, perCategory: number | undefined, categories: number): { prompts: number | null; detail: string } {
  if (count.rows === null) return { prompts: null, detail: count.detail };
  if (perCategory === undefined) return { prompts: count.rows, detail: `all ${formatCount(count.rows)} rows (${count.source})` };
  if (count.categories) {
    const n = Object.values(count.categories).reduce((a, c) => a + Math.min(c, perCategory), 0);
    return { prompts: n, detail: `${perCategory} per category over ${Object.keys(count.categories).length} categories (counted)` };
  }
  const n = Math.min(count.rows, perCategory * categories);
  return { prompts: n, detail: `at most ${perCategory} per category × ${categories} topics of ${formatCount(count.rows)} rows (${count.source})` };
}

// ---------------------------------------------------------------------------------------------
// Dataset builds (activities/derived/*.ts): generator and judge calls before any stage trains
// ---------------------------------------------------------------------------------------------

/** A PRISM opening prompt (a statement or question someone wrote to a chatbot), when it cannot be measured. */
export const ASSUMED_STATEMENT_TOKENS = 40;
/** A preference-set prompt (UltraFeedback / HH-RLHF first user turn), when it cannot be measured. */
export const ASSUMED_PROMPT_TOKENS = 150;
/** One side of a datapoint judged as a whole conversation (prompt and one response), when it cannot be measured. */
export const ASSUMED_CONVERSATION_TOKENS = 600;
/** Tokens of one c-TF-IDF n-gram shown to the naming call (one to three words). */
export const NGRAM_TOKENS = 3;
/** Questions of a cluster shown to its naming call (activities/derived/vprism.ts). */
export const NAMING_QUESTIONS = 10;

/** Characters of the prompts the builds send, with empty user text (worker/plan.ts reads them from the builders). */
export interface BuildTemplates {
  /** V-PRISM's system prompts: rephrase a statement, name a cluster, the value-laden Yes/No check. */
  rephrase: number;
  naming: number;
  valueCheck: number;
  /** Synthetic pairs: the stance instruction with an empty prompt, per `generator.stanceInstruction`, mean over the spec's topics and both sides. */
  stanceResponse: { system: number; user: number };
  /** Stance analysis: the conversation-level judge prompt with an empty conversation, mean over topics. */
  conversationJudge: number;
}
export const NO_BUILD_TEMPLATES: BuildTemplates = { rephrase: 0, naming: 0, valueCheck: 0, stanceResponse: { system: 0, user: 0 }, conversationJudge: 0 };

export interface PlanBuildCall {
  /** What the calls do ("rephrase statements", "stance-check responses", …). */
  step: string;
  role: 'generator' | 'judge';
  model: string;
  calls: number | null;
  /** True when `calls` is an upper bound (the count depends on what an earlier step returns). */
  bound: boolean;
  /** How the count follows from the spec. */
  detail: string;
  inputTokensPerCall: number;
  /** Generator: its maxTokens (an upper bound); judge: one token. */
  outputTokensPerCall: number;
  inputTokens: number | null;
  outputTokens: number | null;
  /** At the model's online token prices; null when the calls or the price are unknown. */
  cost: number | null;
  /** The price used, or "no price for <model>". */
  price: string;
}

export interface PlanBuild {
  name: string;
  build: BuiltDatasetSpec['build'];
  from: Record<string, string>;
  /** Rows of the input the calls scale with (statements, candidate prompts, datapoints); null when unknown. */
  inputRows: number | null;
  inputDetail: string;
  calls: PlanBuildCall[];
  generatorCalls: number | null;
  judgeCalls: number | null;
  /** Sum of the calls' costs; null when any is unknown. */
  cost: number | null;
  /** True when some count is an upper bound. */
  bound: boolean;
  unknown: string[];
}

export interface PlanBuildTotals {
  builds: number;
  generatorCalls: number;
  judgeCalls: number;
  generatorInputTokens: number;
  generatorOutputTokens: number;
  judgeInputTokens: number;
  judgeOutputTokens: number;
  /** Known costs summed (online prices). */
  cost: number;
  bound: boolean;
  incomplete: boolean;
  unknown: string[];
}

/** What a role's token prices are for `model`: generators look in `generator` then `judge`; the judge in `judge`. */
export function tokenPrice(prices: PriceTable, role: 'generator' | 'judge', model: string): z.infer<typeof JudgePrice> | undefined {
  if (role === 'generator' && Object.hasOwn(prices.generator, model)) return prices.generator[model];
  return Object.hasOwn(prices.judge, model) ? prices.judge[model] : undefined;
}

/** Online cost of `calls` calls of a model at its token prices. */
export function callCost(calls: number, inputPerCall: number, outputPerCall: number, price: { inputPerMillion: number; outputPerMillion: number }): number {
  return (calls * inputPerCall * price.inputPerMillion + calls * outputPerCall * price.outputPerMillion) / 1e6;
}

/** Rows a build reads from `name`: its count with the entry's own `limit` applied. */
function inputRowsOf(spec: LineageSpec, datasets: Record<string, DatasetCount>, name: string): { rows: number | null; detail: string; meanRowChars?: number } {
  const count = datasets[name] ?? { rows: null, source: 'unknown' as const, detail: 'not in datasets' };
  const entry = Object.hasOwn(spec.datasets, name) ? spec.datasets[name] : undefined;
  const limit = entry?.limit;
  if (count.rows === null) return { rows: null, detail: `rows of "${name}" unknown (${count.detail})` };
  if (limit !== undefined && limit < count.rows) return { rows: limit, detail: `"${name}": limit ${formatCount(limit)} of ${formatCount(count.rows)} (${count.source})`, meanRowChars: count.meanRowChars };
  return { rows: count.rows, detail: `"${name}": ${formatCount(count.rows)} rows (${count.source}${count.source === 'paper' ? `: ${count.detail}` : ''})`, meanRowChars: count.meanRowChars };
}

const tokensOf = (chars: number) => Math.ceil(chars / CHARS_PER_TOKEN);

/**
 * Generator and judge calls of every built dataset, in build order. What each builder does
 * (activities/derived/*.ts):
 * - v-prism: one rephrasing per statement; one naming call per HDBSCAN cluster (at most
 *   statements / minClusterSize, since a cluster has at least that many members); with valueCheck,
 *   one Yes/No call per question of an assigned cluster (at most every question). No judge calls.
 * - synthetic-pairs: per category at most promptsPerCategory distinct prompts (and no more than the
 *   candidates); two responses per prompt (support, oppose); each non-empty response stance-checked
 *   by the spec's judge.
 * - stance-analysis: each datapoint within `threshold` of some question is judged once (chat) or once
 *   per side (preference, stance-pairs); which datapoints are kept is known only after embedding, so
 *   the count is a bound: the dataset's rows (after its limit), at most the build's `limit`.
 * - concat: no calls.
 */
export function planBuilds(a: {
  spec: LineageSpec;
  datasets: Record<string, DatasetCount>;
  prices: PriceTable;
  templates: BuildTemplates;
  /** Judge prompt template tokens for a question/response call (with chat framing), as the stages use. */
  judgeTemplateTokens: number;
}): { builds: PlanBuild[]; totals: PlanBuildTotals } {
  const { spec, datasets, prices, templates } = a;
  const judgeModel = spec.evaluation.judge.model;
  const topics = Object.keys(spec.evaluation.topics).length;
  const builds: PlanBuild[] = [];

  const call = (c: Omit<PlanBuildCall, 'inputTokens' | 'outputTokens' | 'cost' | 'price'>): PlanBuildCall => {
    const price = tokenPrice(prices, c.role, c.model);
    return {
      ...c,
      inputTokens: c.calls === null ? null : c.calls * c.inputTokensPerCall,
      outputTokens: c.calls === null ? null : c.calls * c.outputTokensPerCall,
      cost: c.calls === null || !price ? null : callCost(c.calls, c.inputTokensPerCall, c.outputTokensPerCall, price),
      price: price ? `${price.inputPerMillion} / ${price.outputPerMillion} ${prices.currency} per million input / output tokens (online) — ${price.source}` : `no price for ${c.model}`,
    };
  };

  for (const name of buildOrder(spec)) {
    const d = spec.datasets[name];
    if (!d || !isBuilt(d)) continue;
    const calls: PlanBuildCall[] = [];
    const unknown: string[] = [];
    let inputRows: number | null = null;
    let inputDetail = '';
    if (d.build === 'v-prism') {
      const src = inputRowsOf(spec, datasets, d.from.statements);
      inputRows = src.rows;
      inputDetail = `statements: ${src.detail}`;
      const n = src.rows;
      const g = d.generator;
      const statementTokens = src.meanRowChars !== undefined ? tokensOf(src.meanRowChars) : ASSUMED_STATEMENT_TOKENS;
      const clusters = n === null ? null : Math.floor(n / d.clustering.minClusterSize);
      calls.push(
        call({ step: 'rephrase statements', role: 'generator', model: g.model, calls: n, bound: false, detail: 'one per statement (empty ones skipped)', inputTokensPerCall: tokensOf(templates.rephrase) + CHAT_FRAMING_TOKENS + statementTokens, outputTokensPerCall: g.maxTokens }),
        call({
          step: 'name clusters', role: 'generator', model: g.model, calls: clusters, bound: true,
          detail: `one per cluster: at most statements / minClusterSize ${d.clustering.minClusterSize}`,
          inputTokensPerCall: tokensOf(templates.naming) + CHAT_FRAMING_TOKENS + d.clustering.topNgrams * NGRAM_TOKENS + NAMING_QUESTIONS * ASSUMED_QUESTION_TOKENS,
          outputTokensPerCall: g.maxTokens,
        }),
      );
      if (d.valueCheck) {
        calls.push(call({ step: 'value-laden check', role: 'generator', model: g.model, calls: n, bound: true, detail: 'one per question of an assigned cluster: at most one per statement', inputTokensPerCall: tokensOf(templates.valueCheck) + CHAT_FRAMING_TOKENS + ASSUMED_QUESTION_TOKENS, outputTokensPerCall: g.maxTokens }));
      }
    } else if (d.build === 'synthetic-pairs') {
      const src = inputRowsOf(spec, datasets, d.from.prompts);
      const cap = d.promptsPerCategory * topics;
      const selected = src.rows === null ? null : Math.min(cap, src.rows);
      inputRows = selected;
      inputDetail = `prompts: at most ${formatCount(d.promptsPerCategory)} per category × ${topics} categories = ${formatCount(cap)}, of ${src.detail}`;
      const g = d.generator;
      const promptTokens = src.meanRowChars !== undefined ? tokensOf(src.meanRowChars) : ASSUMED_PROMPT_TOKENS;
      const responses = selected === null ? null : 2 * selected;
      calls.push(
        call({ step: 'supporting and opposing responses', role: 'generator', model: g.model, calls: responses, bound: true, detail: 'two per selected prompt (support, oppose)', inputTokensPerCall: tokensOf(templates.stanceResponse[g.stanceInstruction]) + CHAT_FRAMING_TOKENS + promptTokens, outputTokensPerCall: g.maxTokens }),
        call({ step: 'stance-check responses', role: 'judge', model: judgeModel, calls: responses, bound: true, detail: 'one per non-empty response', inputTokensPerCall: a.judgeTemplateTokens + promptTokens + g.maxTokens, outputTokensPerCall: JUDGE_OUTPUT_TOKENS }),
      );
    } else if (d.build === 'stance-analysis') {
      const src = inputRowsOf(spec, datasets, d.from.dataset);
      const format = Object.hasOwn(spec.datasets, d.from.dataset) ? spec.datasets[d.from.dataset]?.format : undefined;
      const sides = format === 'chat' ? 1 : 2;
      const kept = src.rows === null ? null : d.limit !== undefined ? Math.min(d.limit, src.rows) : src.rows;
      inputRows = kept;
      inputDetail = `datapoints: at most ${src.detail}${d.limit !== undefined ? `, at most limit ${formatCount(d.limit)}` : ''} (those within cosine ${d.threshold} of a question; known only after embedding)`;
      const convTokens = src.meanRowChars !== undefined ? tokensOf(src.meanRowChars) : ASSUMED_CONVERSATION_TOKENS;
      calls.push(
        call({
          step: 'judge datapoints', role: 'judge', model: judgeModel, calls: kept === null ? null : kept * sides, bound: true,
          detail: `${sides === 1 ? 'one per kept chat row' : 'one per side of each kept pair'}; an upper bound: every row counted as kept`,
          inputTokensPerCall: tokensOf(templates.conversationJudge) + CHAT_FRAMING_TOKENS + convTokens, outputTokensPerCall: JUDGE_OUTPUT_TOKENS,
        }),
      );
    } else {
      const parts = Object.entries(d.from).map(([, n]) => inputRowsOf(spec, datasets, n));
      inputRows = parts.some((p) => p.rows === null) ? null : parts.reduce((s, p) => s + (p.rows ?? 0), 0);
      inputDetail = `rows joined: ${parts.map((p) => p.detail).join(' + ')}`;
    }
    if (inputRows === null) unknown.push(`build ${name}: ${inputDetail}; declare rows on its input`);
    for (const c of calls) if (c.calls !== null && c.cost === null) unknown.push(`build ${name}: ${c.price} (${c.role}); add it to the ${c.role} prices of a --prices file`);
    const sum = (role: 'generator' | 'judge') => {
      const cs = calls.filter((c) => c.role === role);
      return cs.some((c) => c.calls === null) ? null : cs.reduce((s, c) => s + (c.calls ?? 0), 0);
    };
    builds.push({
      name, build: d.build, from: { ...d.from }, inputRows, inputDetail, calls,
      generatorCalls: sum('generator'), judgeCalls: sum('judge'),
      cost: calls.some((c) => c.cost === null) ? null : calls.reduce((s, c) => s + (c.cost ?? 0), 0),
      bound: calls.some((c) => c.bound),
      unknown: [...new Set(unknown)],
    });
  }
  const all = builds.flatMap((b) => b.calls);
  const total = (role: 'generator' | 'judge', k: 'calls' | 'inputTokens' | 'outputTokens') => sumKnown(all.filter((c) => c.role === role).map((c) => c[k]));
  const unknown = builds.flatMap((b) => b.unknown);
  return {
    builds,
    totals: {
      builds: builds.length,
      generatorCalls: total('generator', 'calls'),
      judgeCalls: total('judge', 'calls'),
      generatorInputTokens: total('generator', 'inputTokens'),
      generatorOutputTokens: total('generator', 'outputTokens'),
      judgeInputTokens: total('judge', 'inputTokens'),
      judgeOutputTokens: total('judge', 'outputTokens'),
      cost: sumKnown(all.map((c) => c.cost)),
      bound: builds.some((b) => b.bound),
      incomplete: unknown.length > 0,
      unknown,
    },
  };
}

export function computePlan(input: PlanInput): Plan {
  const { spec, throughput, prices } = input;
  const ev = spec.evaluation;
  const base = modelParams(spec.base.model, spec.base.name, throughput);
  const params = base.params;
  const unknownAll: string[] = [];
  if (params === null) unknownAll.push(`base model ${spec.base.model}: parameter count unknown (${base.source}); GPU-hours and storage are not computed`);

  // Evaluation: prompts, tokens per judge call.
  const evalCount = input.datasets[ev.evalSet] ?? { rows: null, source: 'unknown' as const, detail: 'not in datasets' };
  const topics = Object.keys(ev.topics).length;
  const { prompts, detail: promptsDetail } = evalPrompts(evalCount, ev.promptsPerCategory, topics);
  if (prompts === null) unknownAll.push(`eval set "${ev.evalSet}": rows unknown, declare rows (datasets.${ev.evalSet}.rows)`);
  const perCheckpoint = prompts === null ? null : prompts * ev.generationsPerPrompt;
  const answerTokens = input.answerTokens ?? ev.maxNewTokens;
  const answerTokensSource = input.answerTokens !== undefined ? 'declared with --answer-tokens' : `evaluation.maxNewTokens (an upper bound: answers that stop at EOS are shorter; set --answer-tokens for a mean)`;
  const questionTokens = evalCount.meanQuestionChars !== undefined ? Math.ceil(evalCount.meanQuestionChars / CHARS_PER_TOKEN) : ASSUMED_QUESTION_TOKENS;
  const questionTokensSource = evalCount.meanQuestionChars !== undefined ? `mean question length of the eval set (${Math.round(evalCount.meanQuestionChars)} characters)` : 'assumed (the eval set could not be read)';
  const templateTokens = Math.ceil(input.judgeTemplateChars / CHARS_PER_TOKEN) + CHAT_FRAMING_TOKENS;
  const inputPerCall = templateTokens + questionTokens + answerTokens;
  const judgePrice = Object.hasOwn(prices.judge, ev.judge.model) ? prices.judge[ev.judge.model] : undefined;
  if (!judgePrice) unknownAll.push(`judge model "${ev.judge.model}": no price; add it to the judge prices of a --prices file`);

  const judgeCosts = (calls: number | null): Pick<PlanCost, 'judgeOnline' | 'judgeBatch' | 'judge'> => {
    if (calls === null || !judgePrice) return { judgeOnline: null, judgeBatch: null, judge: null };
    const online = (calls * inputPerCall * judgePrice.inputPerMillion + calls * JUDGE_OUTPUT_TOKENS * judgePrice.outputPerMillion) / 1e6;
    const batch = online * (1 - judgePrice.batchDiscount);
    return { judgeOnline: online, judgeBatch: batch, judge: ev.judge.mode === 'batch' ? batch : online };
  };
  // Generation runs on the worker's GPU when the lineage trains on GPUs, else on its CPU.
  const genDevice: 'gpu' | 'cpu' = spec.stages.some((s) => s.gpus > 0) ? 'gpu' : 'cpu';
  const genRate = params === null ? null : rateFor(throughput, genDevice, 'generate', params);
  if (params !== null && !genRate) unknownAll.push(`no ${genDevice} rate for generate in the throughput table`);
  const bytesPerGeneration = answerTokens * CHARS_PER_TOKEN + GENERATION_ROW_OVERHEAD_BYTES;

  /** Generations, judge calls and tokens, generation hours, and their storage, for `evaluated` checkpoints. */
  const evaluationOf = (evaluated: number | null) => {
    const generations = evaluated === null || perCheckpoint === null ? null : evaluated * perCheckpoint;
    const generateHours = generations === null || !genRate ? null : (generations * answerTokens) / genRate.tokensPerSecond / 3600;
    return {
      generations,
      judgeCalls: generations,
      judgeInputTokens: generations === null ? null : generations * inputPerCall,
      judgeOutputTokens: generations === null ? null : generations * JUDGE_OUTPUT_TOKENS,
      generateHours,
      generationBytes: (generations ?? 0) * bytesPerGeneration,
      judgmentBytes: (generations ?? 0) * JUDGMENT_BYTES,
    };
  };

  const hourPrice = (device: 'gpu' | 'cpu') => (device === 'gpu' ? prices.gpuHour.price : prices.cpuHour.price);
  const storageMonth = (bytes: number) => (bytes / 1e9) * prices.storageGbMonth.price;

  const stages: PlanStage[] = [];
  // The base model: evaluated once, nothing trained.
  {
    const e = evaluationOf(1);
    const storage = { checkpoints: 0, generations: e.generationBytes, judgments: e.judgmentBytes, total: e.generationBytes + e.judgmentBytes };
    const j = judgeCosts(e.judgeCalls);
    const genHours = e.generateHours;
    const compute = genHours === null ? null : genHours * hourPrice(genDevice);
    stages.push({
      id: BASE_STAGE_ID, kind: 'base', parent: null, rewardStage: null, dataset: null,
      rows: null, rowsSource: null, rowsDetail: '', epochs: null, maxSteps: null, globalBatchSize: null, perDeviceBatchSize: null,
      gpus: genDevice === 'gpu' ? 1 : 0, device: genDevice, stepsPerEpoch: null, steps: 0, checkpointEvery: null,
      periodicCheckpoints: 0, checkpoints: 0, evaluatedCheckpoints: 1, trainTokens: 0, trainRate: null, trainHours: 0,
      generateHours: genHours,
      gpuHours: genDevice === 'gpu' ? genHours : 0,
      cpuHours: genDevice === 'cpu' ? genHours : 0,
      generations: e.generations, judgeCalls: e.judgeCalls, judgeInputTokens: e.judgeInputTokens, judgeOutputTokens: e.judgeOutputTokens,
      cost: { compute, ...j, storagePerMonth: storageMonth(storage.total), total: compute === null || j.judge === null ? null : compute + j.judge },
      storageBytes: storage,
      unknown: [],
    });
  }

  for (const s of spec.stages) stages.push(planStage(s));

  function planStage(s: StageSpec): PlanStage {
    const unknown: string[] = [];
    const h = s.hyperparameters;
    const count = input.datasets[s.dataset] ?? { rows: null, source: 'unknown' as const, detail: 'not in datasets' };
    const limit = spec.datasets[s.dataset]?.limit;
    let rows = count.rows;
    let rowsSource: PlanStage['rowsSource'] = count.source;
    let rowsDetail = count.detail;
    if (rows !== null && limit !== undefined && limit < rows) {
      rowsDetail = `limit ${formatCount(limit)} of ${formatCount(rows)} (${count.source}: ${count.detail})`;
      rows = limit;
      rowsSource = 'limit';
    }
    let steps: number | null = null;
    let stepsPerEpoch: number | null = null;
    if (h.max_steps > 0) steps = h.max_steps;
    if (rows !== null) ({ steps, stepsPerEpoch } = stageSteps({ kind: s.kind, rows, epochs: h.num_train_epochs, maxSteps: h.max_steps, globalBatchSize: h.global_batch_size, perDeviceBatchSize: h.per_device_train_batch_size, gpus: s.gpus }));
    else if (steps === null) unknown.push(`rows of dataset "${s.dataset}" unknown, declare rows (datasets.${s.dataset}.rows)`);
    const ck = steps === null ? null : checkpointCount(steps, s.checkpointEvery);
    const evaluated = ck === null ? null : s.kind === 'reward' ? 0 : ck.total;
    const device: 'gpu' | 'cpu' = s.gpus > 0 ? 'gpu' : 'cpu';
    const trainTokens = steps === null ? null : steps * h.global_batch_size * sequencesPerExample(s.kind) * h.max_length;
    const rate = params === null ? null : rateFor(throughput, device, s.kind, params);
    if (params !== null && !rate) unknown.push(`no ${device} rate for ${s.kind} in the throughput table`);
    const devices = Math.max(1, s.gpus);
    const trainHours = trainTokens === null || !rate ? null : trainTokens / (rate.tokensPerSecond * devices) / 3600;
    const e = evaluationOf(evaluated);
    const trainDeviceHours = trainHours === null ? null : trainHours * (device === 'gpu' ? s.gpus : 1);
    const hoursOn = (d: 'gpu' | 'cpu'): number | null => {
      const t = device === d ? trainDeviceHours : 0;
      const g = genDevice === d ? e.generateHours : 0;
      return t === null || g === null ? null : t + g;
    };
    const gpuHours = hoursOn('gpu');
    const cpuHours = hoursOn('cpu');
    const compute = gpuHours === null || cpuHours === null ? null : gpuHours * prices.gpuHour.price + cpuHours * prices.cpuHour.price;
    const ckBytes = ck === null || params === null ? null : ck.total * params * checkpointBytesPerParam(s.kind);
    const storage = ckBytes === null ? null : { checkpoints: ckBytes, generations: e.generationBytes, judgments: e.judgmentBytes, total: ckBytes + e.generationBytes + e.judgmentBytes };
    const j = judgeCosts(e.judgeCalls);
    return {
      id: s.id, kind: s.kind, parent: s.parent, rewardStage: s.kind === 'ppo' ? s.rewardStage : null, dataset: s.dataset,
      rows, rowsSource, rowsDetail,
      epochs: h.num_train_epochs, maxSteps: h.max_steps > 0 ? h.max_steps : null, globalBatchSize: h.global_batch_size, perDeviceBatchSize: h.per_device_train_batch_size,
      gpus: s.gpus, device, stepsPerEpoch, steps, checkpointEvery: s.checkpointEvery,
      periodicCheckpoints: ck?.periodic ?? null, checkpoints: ck?.total ?? null, evaluatedCheckpoints: evaluated,
      trainTokens, trainRate: rate, trainHours, generateHours: e.generateHours, gpuHours, cpuHours,
      generations: e.generations, judgeCalls: e.judgeCalls, judgeInputTokens: e.judgeInputTokens, judgeOutputTokens: e.judgeOutputTokens,
      cost: { compute, ...j, storagePerMonth: storageMonth(storage?.total ?? 0), total: compute === null || j.judge === null ? null : compute + j.judge },
      storageBytes: storage,
      unknown,
    };
  }

  const built = planBuilds({ spec, datasets: input.datasets, prices, templates: input.buildTemplates ?? NO_BUILD_TEMPLATES, judgeTemplateTokens: templateTokens });
  const unknown = [...unknownAll, ...stages.flatMap((s) => s.unknown.map((u) => `stage ${s.id}: ${u}`))];
  const incomplete =
    unknown.length > 0 ||
    stages.some((s) => s.steps === null || s.gpuHours === null || s.cpuHours === null || s.generations === null || s.storageBytes === null || s.cost.total === null);
  const totals: PlanTotals = {
    stages: spec.stages.length,
    steps: sumKnown(stages.map((s) => s.steps)),
    checkpoints: sumKnown(stages.map((s) => s.checkpoints)),
    evaluatedCheckpoints: sumKnown(stages.map((s) => s.evaluatedCheckpoints)),
    generations: sumKnown(stages.map((s) => s.generations)),
    judgeCalls: sumKnown(stages.map((s) => s.judgeCalls)),
    judgeInputTokens: sumKnown(stages.map((s) => s.judgeInputTokens)),
    judgeOutputTokens: sumKnown(stages.map((s) => s.judgeOutputTokens)),
    gpuHours: sumKnown(stages.map((s) => s.gpuHours)),
    cpuHours: sumKnown(stages.map((s) => s.cpuHours)),
    storageBytes: sumKnown(stages.map((s) => s.storageBytes?.total ?? null)),
    cost: {
      currency: prices.currency,
      compute: sumKnown(stages.map((s) => s.cost.compute)),
      judgeOnline: sumKnown(stages.map((s) => s.cost.judgeOnline)),
      judgeBatch: sumKnown(stages.map((s) => s.cost.judgeBatch)),
      judge: sumKnown(stages.map((s) => s.cost.judge)),
      total: sumKnown(stages.map((s) => s.cost.compute)) + sumKnown(stages.map((s) => s.cost.judge)),
      storagePerMonth: sumKnown(stages.map((s) => s.cost.storagePerMonth)),
      withBuilds: sumKnown(stages.map((s) => s.cost.compute)) + sumKnown(stages.map((s) => s.cost.judge)) + built.totals.cost,
    },
    incomplete,
    builds: built.totals,
  };

  const assumptions = [
    `training tokens: every sequence counted at max_length (an upper bound; batches are padded to their longest sequence); reward, DPO and SimPO examples are two sequences`,
    `steps: as transformers' Trainer counts them (micro-batches per rank, then gradient accumulation); PPO: ceil(epochs × rows / global_batch_size)`,
    `checkpoints: every checkpointEvery steps plus the final step; policy checkpoints are evaluated, reward-model checkpoints are not; the base model is evaluated once`,
    `checkpoint bytes: parameters × (${WEIGHT_BYTES_PER_PARAM} float32 weight + ${OPTIMIZER_BYTES_PER_PARAM} AdamW state) bytes; PPO stores policy and value model`,
    `judge input tokens per call ≈ ${inputPerCall}: prompt template ${templateTokens} (activities/judge/prompt.ts at ${CHARS_PER_TOKEN} characters per token, with chat framing) + question ${questionTokens} (${questionTokensSource}) + answer ${answerTokens} (${answerTokensSource}); output ${JUDGE_OUTPUT_TOKENS} token per call`,
    `generation runs on one ${genDevice === 'gpu' ? 'GPU' : 'CPU machine'}: ${genRate ? `${formatCount(Math.round(genRate.tokensPerSecond))} completion tokens/s — ${genRate.source}` : 'rate unknown'}`,
    `storage: a generation ≈ ${bytesPerGeneration} bytes, a cached judgment ≈ ${JUDGMENT_BYTES} bytes; datasets and reports not counted`,
    `dataset builds: generator calls are counted at the generator's maxTokens output (an upper bound) and priced online; judge calls of builds are online (judgeAll), one output token each; a "≤" count is an upper bound; embedding and clustering time is not counted; text lengths are measured on file: inputs (a JSON line's characters / ${CHARS_PER_TOKEN}), else assumed (statement ${ASSUMED_STATEMENT_TOKENS}, prompt ${ASSUMED_PROMPT_TOKENS}, conversation side ${ASSUMED_CONVERSATION_TOKENS}, question ${ASSUMED_QUESTION_TOKENS} tokens)`,
    `prices (${prices.currency}): GPU-hour ${prices.gpuHour.price} — ${prices.gpuHour.source}; CPU-hour ${prices.cpuHour.price} — ${prices.cpuHour.source}; storage ${prices.storageGbMonth.price} per GB-month — ${prices.storageGbMonth.source}`,
  ];

  return {
    lineage: spec.name,
    base: { model: spec.base.model, name: spec.base.name ?? spec.base.model, params, paramsSource: base.source },
    evaluation: {
      evalSet: ev.evalSet,
      prompts,
      promptsDetail,
      generationsPerPrompt: ev.generationsPerPrompt,
      generationsPerCheckpoint: perCheckpoint,
      answerTokens,
      answerTokensSource,
      questionTokens,
      questionTokensSource,
      judge: {
        model: ev.judge.model,
        mode: ev.judge.mode,
        inputTokensPerCall: inputPerCall,
        outputTokensPerCall: JUDGE_OUTPUT_TOKENS,
        price: judgePrice ? `${judgePrice.inputPerMillion} / ${judgePrice.outputPerMillion} ${prices.currency} per million input / output tokens, batch −${Math.round(judgePrice.batchDiscount * 100)} % — ${judgePrice.source}` : null,
      },
    },
    stages,
    builds: built.builds,
    totals,
    assumptions,
    unknown,
  };
}

// ---------------------------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------------------------

export function formatCount(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

export function formatParams(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)}B` : `${(n / 1e6).toFixed(1)}M`;
}

/** Decimal units, as disks and object stores bill them. */
export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
  let v = n;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}

export function formatTokens(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  return formatCount(n);
}

export function formatHours(h: number): string {
  return h >= 100 ? formatCount(h) : h >= 1 ? h.toFixed(1) : h.toFixed(3);
}

export function formatMoney(v: number, currency: string): string {
  const digits = v >= 100 ? 0 : 2;
  return `${v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })} ${currency}`;
}

const orUnknown = <T>(v: T | null, f: (x: T) => string, what = 'unknown'): string => (v === null ? what : f(v));

function stageLine(s: PlanStage, currency: string): string {
  const parts: string[] = [];
  if (s.kind === 'base') {
    parts.push('base model, evaluated once');
  } else {
    const rows = s.rows === null ? `rows unknown, declare rows` : `${formatCount(s.rows)} rows (${s.rowsSource})`;
    parts.push(`[${s.kind}] ${s.dataset}: ${rows}`);
    if (s.maxSteps !== null) parts.push(`max_steps ${formatCount(s.maxSteps)}`);
    else parts.push(`${s.epochs} epoch${s.epochs === 1 ? '' : 's'} / batch ${s.globalBatchSize}`);
    parts.push(`${orUnknown(s.steps, formatCount)} steps`);
    parts.push(
      s.checkpoints === null
        ? 'checkpoints unknown'
        : `${s.checkpoints} checkpoint${s.checkpoints === 1 ? '' : 's'} (${s.periodicCheckpoints} every ${s.checkpointEvery}${s.checkpoints > (s.periodicCheckpoints ?? 0) ? ' + final' : ''})`,
    );
    parts.push(s.gpus > 0 ? `${s.gpus} GPU${s.gpus === 1 ? '' : 's'}` : 'CPU');
    if (s.rewardStage) parts.push(`reward model ${s.rewardStage}`);
  }
  const hours = s.device === 'gpu' || s.gpus > 0 ? `${orUnknown(s.gpuHours, formatHours)} GPU-h` : `${orUnknown(s.cpuHours, formatHours)} CPU-h`;
  parts.push(hours);
  if (s.kind !== 'reward') parts.push(`${orUnknown(s.generations, formatCount)} generations`);
  parts.push(orUnknown(s.storageBytes, (b) => formatBytes(b.total)));
  parts.push(orUnknown(s.cost.total, (c) => formatMoney(c, currency), 'cost unknown'));
  return `${s.id}  ${parts.join(' · ')}`;
}

/** The lineage DAG (parents; PPO stages name their reward model), one line per stage, then the totals. */
export function renderPlan(plan: Plan): string {
  const cur = plan.totals.cost.currency;
  const lines: string[] = [];
  lines.push(`plan for lineage "${plan.lineage}": ${plan.base.name}, ${orUnknown(plan.base.params, formatParams, 'size unknown')} parameters (${plan.base.paramsSource})`);
  const e = plan.evaluation;
  lines.push(
    `evaluation: ${orUnknown(e.prompts, formatCount)} prompts (${e.promptsDetail}) × ${e.generationsPerPrompt} samples = ${orUnknown(e.generationsPerCheckpoint, formatCount)} generations per checkpoint; ` +
      `judge ${e.judge.model} (${e.judge.mode}), ≈ ${e.judge.inputTokensPerCall} input + ${e.judge.outputTokensPerCall} output tokens per call`,
  );
  lines.push('');
  const children = new Map<string, PlanStage[]>();
  for (const s of plan.stages) if (s.parent !== null) children.set(s.parent, [...(children.get(s.parent) ?? []), s]);
  const root = plan.stages.find((s) => s.kind === 'base');
  const walk = (s: PlanStage, prefix: string, last: boolean, top: boolean) => {
    lines.push(top ? stageLine(s, cur) : `${prefix}${last ? '└─ ' : '├─ '}${stageLine(s, cur)}`);
    const kids = children.get(s.id) ?? [];
    const next = top ? '' : `${prefix}${last ? '   ' : '│  '}`;
    kids.forEach((k, i) => walk(k, next, i === kids.length - 1, false));
  };
  if (root) walk(root, '', true, true);
  if (plan.builds.length > 0) {
    lines.push('');
    lines.push('dataset builds (before the stages that use them; online prices; ≤ marks an upper bound)');
    for (const b of plan.builds) {
      const cost = b.cost === null ? 'cost unknown' : `${b.bound ? '≤ ' : ''}${formatMoney(b.cost, cur)}`;
      lines.push(`${b.name}  [${b.build}] from ${Object.values(b.from).join(', ')}: ${b.inputDetail} · ${cost}`);
      for (const c of b.calls) {
        const n = c.calls === null ? 'calls unknown' : `${c.bound ? '≤ ' : ''}${formatCount(c.calls)} calls`;
        const tok = c.inputTokens === null || c.outputTokens === null ? '' : ` · ${formatTokens(c.inputTokens)} input + ${c.role === 'generator' ? '≤ ' : ''}${formatTokens(c.outputTokens)} output tokens`;
        const money = c.cost === null ? (c.calls === null ? '' : ` · ${c.price}`) : ` · ${formatMoney(c.cost, cur)}`;
        lines.push(`   ${c.step}: ${c.role} ${c.model}, ${n} — ${c.detail}${tok}${money}`);
      }
      if (b.calls.length === 0) lines.push('   no generator or judge calls');
    }
  }
  const t = plan.totals;
  lines.push('');
  lines.push(`totals${t.incomplete ? ' (incomplete: some figures unknown, see below)' : ''}`);
  const row = (k: string, v: string) => lines.push(`  ${k.padEnd(20)}${v}`);
  row('stages', `${t.stages} (+ the base model's evaluation)`);
  row('optimizer steps', formatCount(t.steps));
  row('checkpoints', `${formatCount(t.checkpoints)} saved, ${formatCount(t.evaluatedCheckpoints)} evaluated (with the base model)`);
  row('generations', formatCount(t.generations));
  row('judge calls', formatCount(t.judgeCalls));
  row('judge tokens', `${formatTokens(t.judgeInputTokens)} input, ${formatTokens(t.judgeOutputTokens)} output`);
  row('GPU-hours', formatHours(t.gpuHours));
  if (t.cpuHours > 0) row('CPU-hours', formatHours(t.cpuHours));
  row('storage', `${formatBytes(t.storageBytes)} (${formatMoney(t.cost.storagePerMonth, cur)} per month)`);
  row('cost', `${formatMoney(t.cost.total, cur)} = compute ${formatMoney(t.cost.compute, cur)} + judge ${formatMoney(t.cost.judge, cur)} (${e.judge.mode})`);
  row('judge by mode', `online ${formatMoney(t.cost.judgeOnline, cur)}, batch API ${formatMoney(t.cost.judgeBatch, cur)}${e.judge.price ? '' : ' (no price for this judge)'}`);
  if (plan.builds.length > 0) {
    const tb = t.builds;
    const le = tb.bound ? '≤ ' : '';
    lines.push('');
    lines.push(`dataset builds total${tb.incomplete ? ' (incomplete: see below)' : ''}`);
    row('builds', String(tb.builds));
    row('generator calls', `${le}${formatCount(tb.generatorCalls)} (${formatTokens(tb.generatorInputTokens)} input, ≤ ${formatTokens(tb.generatorOutputTokens)} output tokens)`);
    row('judge calls', `${le}${formatCount(tb.judgeCalls)} (${formatTokens(tb.judgeInputTokens)} input, ${formatTokens(tb.judgeOutputTokens)} output tokens)`);
    row('cost', `${le}${formatMoney(tb.cost, cur)}${tb.incomplete ? ' (priced calls only)' : ''}`);
    row('cost with builds', `${formatMoney(t.cost.withBuilds, cur)} = stages ${formatMoney(t.cost.total, cur)} + builds ${formatMoney(tb.cost, cur)}`);
    if (tb.unknown.length > 0) {
      lines.push('  unknown:');
      for (const u of tb.unknown) lines.push(`    - ${u}`);
    }
  }
  if (plan.unknown.length > 0) {
    lines.push('');
    lines.push('unknown:');
    for (const u of plan.unknown) lines.push(`  - ${u}`);
  }
  lines.push('');
  lines.push('assumptions:');
  for (const a of plan.assumptions) lines.push(`  - ${a}`);
  if (e.judge.price) lines.push(`  - judge price: ${e.judge.price}`);
  const rates = new Map<string, string>();
  for (const s of plan.stages) if (s.trainRate && s.kind !== 'base') rates.set(`${s.device} ${s.kind}`, `${formatCount(Math.round(s.trainRate.tokensPerSecond))} tokens/s per ${s.device === 'gpu' ? 'GPU' : 'machine'} (${s.trainRate.basis}) — ${s.trainRate.source}`);
  for (const [k, v] of rates) lines.push(`  - ${k}: ${v}`);
  return lines.join('\n') + '\n';
}
