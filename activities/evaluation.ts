/**
 * CPU-side evaluation activities: judge the generations of a checkpoint, summarise them into v(T)
 * per topic, compute a stage's drift, and render the lineage report. Each reads its inputs from the
 * store by ref and writes its outputs at deterministic keys, so a retry overwrites identical bytes.
 */
import { activityContext } from './context';
import { ApplicationFailure } from '@temporalio/common';
import type { ArtifactRef, CheckpointSummary as CheckpointSummaryT, Judgment, StageDrift as StageDriftT, StanceProbs } from '../common/contracts';
import { CheckpointSummary, Judgment as JudgmentSchema } from '../common/contracts';
import { storeKeys } from '../common/config';
import { computeStageDrift, summariseCheckpoint } from '../common/drift';
import type { EvaluationSpec } from '../common/spec';
import { recordEvaluation } from './cache';
import { workerEnv } from './env';
import { GenerationRow, loadEvalRows } from './generation';
import { cacheObjectKey, CachedJudgment, type JudgeCache } from './judge/cache';
import { createJudgeClient } from './judge/client';
import { judgeAll } from './judge/judgeAll';
import { JUDGE_PROMPT_VERSION } from './judge/prompt';
import { renderLineageReport } from './report';
import { getBytes, getJsonIfExists, getVerified, putBytes, putJson, uriOf } from './store';

/** Judge cache in the store: one small JSON object per key (DESIGN §4). */
export class StoreJudgeCache implements JudgeCache {
  async get(key: string) {
    return getJsonIfExists(uriOf(cacheObjectKey(key)), CachedJudgment);
  }
  async putMany(entries: ReadonlyArray<{ key: string; value: CachedJudgment }>) {
    await Promise.all(entries.map((e) => putJson(cacheObjectKey(e.key), e.value)));
  }
}


export interface JudgeResponsesInput {
  lineage: string;
  stageId: string;
  step: number;
  generations: ArtifactRef;
  evalSet: ArtifactRef;
  topics: Record<string, string>;
  judge: EvaluationSpec['judge'];
}
export interface JudgeResponsesResult {
  judgments: ArtifactRef;
  judgeModel: string;
  calls: number;
  cacheHits: number;
  unlabelled: number;
}

/**
 * Asks the stance judge about every generation. Safe to retry: every answer is cached in the store
 * by (judge model, prompt version, question, response, topic), so a retry or a re-evaluation makes
 * no new calls for what was already judged.
 */
export async function judgeResponses(input: JudgeResponsesInput): Promise<JudgeResponsesResult> {
  const env = workerEnv();
  if (!env.VALUEDRIFT_JUDGE_BASE_URL && !process.env.OPENAI_API_KEY) {
    // A worker without a judge endpoint cannot judge until it is reconfigured.
    throw ApplicationFailure.nonRetryable('no judge endpoint: set VALUEDRIFT_JUDGE_BASE_URL (and VALUEDRIFT_JUDGE_API_KEY) on the cpu worker', 'JudgeNotConfigured');
  }
  const model = env.VALUEDRIFT_JUDGE_MODEL ?? input.judge.model;
  const questions = new Map((await loadEvalRows(input.evalSet)).map((r) => [r.id, r] as const));
  const rows = (await getVerified(input.generations))
    .toString('utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => GenerationRow.parse(JSON.parse(l)));
  const items = rows.map((r) => {
    const q = questions.get(r.prompt_id);
    const topic = input.topics[r.category];
    if (!q || !topic) throw ApplicationFailure.nonRetryable(`generation for ${r.prompt_id} (${r.category}) has no question or topic`, 'EvalSetMismatch');
    return { promptId: r.prompt_id, category: r.category, sample: r.sample, question: q.question, response: r.text, topic };
  });
  const c = activityContext();
  const client = createJudgeClient({
    baseURL: env.VALUEDRIFT_JUDGE_BASE_URL,
    apiKey: env.VALUEDRIFT_JUDGE_API_KEY ?? process.env.OPENAI_API_KEY ?? 'unset',
  });
  let done = 0;
  let total = items.length;
  const beat = setInterval(() => c?.heartbeat({ done, total }), 10_000);
  const result = await judgeAll({
    items,
    client,
    model,
    topLogprobs: input.judge.topLogprobs,
    concurrency: input.judge.concurrency,
    cache: new StoreJudgeCache(),
    maxRetries: 8,
    onProgress: (d, t) => {
      done = d;
      total = t;
    },
    signal: c?.cancellationSignal,
  }).finally(() => clearInterval(beat));
  const body = result.judgments.map((j) => JSON.stringify(j)).join('\n') + '\n';
  const judgments = await putBytes(`${storeKeys.evalDir(input.lineage, input.stageId, input.step)}/judgments.jsonl`, body, 'application/x-ndjson');
  return {
    judgments,
    judgeModel: model,
    calls: result.calls,
    cacheHits: result.cacheHits,
    unlabelled: result.judgments.filter((j) => j.probs === null).length,
  };
}

export interface SummariseEvaluationInput {
  lineage: string;
  stageId: string;
  step: number;
  totalSteps: number;
  judgments: ArtifactRef;
  judgeModel: string;
  topics: Record<string, string>;
  evalKey: string;
}
export interface SummariseEvaluationResult {
  summary: ArtifactRef;
  v: Record<string, StanceProbs>;
}

/** Writes summary.json (v(T) with per-prompt spread and 95 % CI) and records the evaluation cache. */
export async function summariseEvaluation(input: SummariseEvaluationInput): Promise<SummariseEvaluationResult> {
  const judgments: Judgment[] = (await getVerified(input.judgments))
    .toString('utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JudgmentSchema.parse(JSON.parse(l)));
  const s = summariseCheckpoint({
    lineage: input.lineage,
    stageId: input.stageId,
    step: input.step,
    totalSteps: input.totalSteps,
    judgeModel: input.judgeModel,
    promptVersion: JUDGE_PROMPT_VERSION,
    topics: input.topics,
    judgments,
  });
  const summary = await putJson(`${storeKeys.evalDir(input.lineage, input.stageId, input.step)}/summary.json`, s);
  const v = Object.fromEntries(Object.entries(s.topics).map(([k, t]) => [k, t.v]));
  await recordEvaluation({ evalKey: input.evalKey, summary, v });
  return { summary, v };
}

export interface ComputeDriftInput {
  lineage: string;
  stageId: string;
  totalSteps: number;
  /** The stage's starting point (its parent's final evaluation), read as step 0 of this stage. */
  start: ArtifactRef;
  /** This stage's checkpoint summaries. */
  checkpoints: ArtifactRef[];
}
export interface DriftRow {
  category: string;
  stance: 'support' | 'neutral' | 'oppose';
  M: number;
  eta: number;
}
export interface ComputeDriftResult {
  drift: ArtifactRef;
  rows: DriftRow[];
}

async function loadSummary(ref: ArtifactRef): Promise<CheckpointSummaryT> {
  return CheckpointSummary.parse(JSON.parse((await getVerified(ref)).toString('utf8')));
}

/** Drift (M, η) per topic and stance for one stage; writes drift.json. Pure over its inputs; safe to retry. */
export async function computeDrift(input: ComputeDriftInput): Promise<ComputeDriftResult> {
  const start = await loadSummary(input.start);
  const points = await Promise.all(input.checkpoints.map(loadSummary));
  const summaries = [{ ...start, lineage: input.lineage, stageId: input.stageId, step: 0, totalSteps: input.totalSteps }, ...points];
  const d = computeStageDrift({ summaries });
  // The exact inputs beside the result, so `npm run lineage -- drift summaries.jsonl` reproduces it.
  await putBytes(
    `${storeKeys.lineageRoot(input.lineage)}/${input.stageId}/summaries.jsonl`,
    summaries.map((x) => JSON.stringify(x)).join('\n') + '\n',
    'application/x-ndjson',
  );
  const drift = await putJson(storeKeys.drift(input.lineage, input.stageId), d);
  const rows: DriftRow[] = [];
  for (const [category, t] of Object.entries(d.topics)) {
    for (const stance of ['support', 'neutral', 'oppose'] as const) rows.push({ category, stance, M: t.stances[stance].M, eta: t.stances[stance].eta });
  }
  return { drift, rows };
}

export interface WriteReportInput {
  lineage: string;
  stages: Array<{ stageId: string; kind: string; parentId: string | null; drift: ArtifactRef }>;
  /** Workflow time, so the page is reproducible from history. */
  generatedAt: string;
}
export interface WriteReportResult {
  report: ArtifactRef;
  figures: number;
}

/** Renders the lineage report (HTML + one SVG per stage × topic) under `lineages/<l>/report/`. Safe to retry. */
export async function writeReport(input: WriteReportInput): Promise<WriteReportResult> {
  const stages = await Promise.all(
    input.stages.map(async (s) => ({
      stageId: s.stageId,
      kind: s.kind,
      parentId: s.parentId,
      drift: JSON.parse((await getBytes(s.drift.uri)).toString('utf8')) as StageDriftT,
    })),
  );
  const out = await renderLineageReport({ lineage: input.lineage, stages, generatedAt: input.generatedAt });
  const root = storeKeys.report(input.lineage);
  await Promise.all(out.figures.map((f) => putBytes(`${root}/figures/${f.name}.svg`, f.svg, 'image/svg+xml')));
  const report = await putBytes(`${root}/index.html`, out.html, 'text/html; charset=utf-8');
  return { report, figures: out.figures.length };
}
