/**
 * The evaluation cache and a lineage's pointers into it. A checkpoint evaluated before with the same
 * settings (same evaluation key: model weights, eval set, prompts, generation settings, seed, judge)
 * is answered from the record; nothing is generated or judged again.
 *
 * Records reference only content-addressed objects (`cache/generations|judgments|summaries/…`),
 * which are written once. The lineage's own folder (`lineages/<l>/<stage>/evals/step-<n>/`) gets a
 * pointer (evaluation.json) and a copy of the summary with the lineage's coordinates (summary.json);
 * both may be rewritten when the lineage is evaluated again with other settings, and no record ever
 * points at them.
 */
import { z } from 'zod';
import { ArtifactRef, type CheckpointSummary, EvaluationPointer, EvaluationSummary, type ModelHandle, StanceProbs } from '../../common/contracts';
import { storeKeys } from '../../common/config';
import type { EvaluationSpec } from '../../common/spec';
import { workerEnv } from '../env';
import { getJsonIfExists, getRefIfExists, getVerified, putJson, uriOf } from '../store';
import { evaluationKeys, judgeIdentity, type EvaluationKeys, type PromptStyle } from './keys';

export const EvalCacheRecord = z.object({
  evalKey: z.string(),
  generations: ArtifactRef,
  judgments: ArtifactRef,
  summary: ArtifactRef,
  v: z.record(z.string(), StanceProbs),
});
export type EvalCacheRecord = z.infer<typeof EvalCacheRecord>;

export interface EvaluationPlace {
  lineage: string;
  stageId: string;
  step: number;
  totalSteps: number;
}

export interface LookupEvaluationInput extends EvaluationPlace {
  model: ModelHandle;
  promptStyle: PromptStyle;
  evaluation: EvaluationSpec;
  evalSet: ArtifactRef;
  seed: number;
}
export interface LookupEvaluationResult {
  keys: EvaluationKeys;
  hit: { summary: ArtifactRef; v: Record<string, StanceProbs> } | null;
  /** On a miss: the samples when they are already stored (re-judging needs no GPU). */
  generations: ArtifactRef | null;
}

export async function loadEvaluationSummary(ref: ArtifactRef): Promise<EvaluationSummary> {
  return EvaluationSummary.parse(JSON.parse((await getVerified(ref)).toString('utf8')));
}

/** The summary as it reads at a place in a lineage. */
export function placedSummary(s: EvaluationSummary, at: EvaluationPlace): CheckpointSummary {
  return { lineage: at.lineage, stageId: at.stageId, step: at.step, totalSteps: at.totalSteps, judgeModel: s.judgeModel, promptVersion: s.promptVersion, topics: s.topics };
}

/** Points the lineage's evals/step-<n>/ folder at a record's objects. Idempotent. */
export async function placeEvaluation(at: EvaluationPlace, record: EvalCacheRecord, keys: EvaluationKeys, summary: EvaluationSummary): Promise<void> {
  const pointer: EvaluationPointer = { ...keys, generations: record.generations, judgments: record.judgments, summary: record.summary };
  await putJson(storeKeys.evalSummaryCopy(at.lineage, at.stageId, at.step), placedSummary(summary, at));
  await putJson(storeKeys.evalPointer(at.lineage, at.stageId, at.step), EvaluationPointer.parse(pointer));
}

/** Computes the evaluation's keys with the judge this worker would ask, and looks the record up. Safe to retry. */
export async function lookupEvaluation(input: LookupEvaluationInput): Promise<LookupEvaluationResult> {
  const keys = evaluationKeys({
    model: input.model,
    promptStyle: input.promptStyle,
    evaluation: input.evaluation,
    evalSet: input.evalSet,
    seed: input.seed,
    step: input.step,
    judge: judgeIdentity(workerEnv(), input.evaluation.judge),
    topics: input.evaluation.topics,
  });
  const rec = await getJsonIfExists(uriOf(storeKeys.evalCache(keys.evalKey)), EvalCacheRecord);
  if (!rec) return { keys, hit: null, generations: (await getRefIfExists(storeKeys.generations(keys.generationKey))) ?? null };
  const summary = await loadEvaluationSummary(rec.summary);
  if (summary.evalKey !== keys.evalKey) throw new Error(`evaluation record ${keys.evalKey} points at the summary of ${summary.evalKey}`);
  await placeEvaluation(input, rec, keys, summary);
  return { keys, hit: { summary: rec.summary, v: rec.v }, generations: rec.generations };
}

export async function recordEvaluation(rec: EvalCacheRecord): Promise<void> {
  await putJson(storeKeys.evalCache(rec.evalKey), EvalCacheRecord.parse(rec));
}
