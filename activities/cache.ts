/**
 * Stage and evaluation caches (like Flyte's or Metaflow's): a stage whose content key already has a
 * complete record is not trained again, and a checkpoint already evaluated with the same settings is
 * not generated or judged again.
 *
 * Stage key = sha256(parent weights' content key, reward model's content key, the stage's config
 * without its id/parent/dataset name, the effective seed, the training data's sha256, trainer
 * protocol version).
 */
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { ArtifactRef, Checkpoint, CheckpointSummary, type ModelHandle, StanceProbs } from '../common/contracts';
import { storeKeys } from '../common/config';
import type { EvaluationSpec, StageSpec } from '../common/spec';
import { canonicalJson } from './judge/cache';
import { JUDGE_PROMPT_VERSION } from './judge/prompt';
import { workerEnv } from './env';
import { getJsonIfExists, getVerified, putJson, sha256Hex, uriOf } from './store';

/** Bump when the trainer's behaviour changes in a way that makes old checkpoints incomparable. */
export const TRAINER_PROTOCOL_VERSION = 'trainer-v1';
/** Bump when generation or summarising changes what an evaluation produces. */
export const EVALUATION_VERSION = 'eval-v1';

export const StageCacheRecord = z.object({
  stageKey: z.string(),
  stageId: z.string(),
  lineage: z.string(),
  totalSteps: z.number().int(),
  checkpoints: z.array(Checkpoint),
  final: Checkpoint,
});
export type StageCacheRecord = z.infer<typeof StageCacheRecord>;

const StageMarker = z.object({ stageKey: z.string() });

export function stageKey(input: { stage: StageSpec; parent: ModelHandle; rewardModel?: ModelHandle; datasetSha256: string; seed: number }): string {
  const { id: _id, parent: _parent, dataset: _dataset, ...config } = input.stage;
  // The seed the trainer actually uses: the stage's own, else the lineage's.
  const seed = input.stage.seed ?? input.seed;
  return sha256Hex(
    canonicalJson({
      v: TRAINER_PROTOCOL_VERSION,
      parent: input.parent.contentKey,
      reward: input.rewardModel?.contentKey ?? null,
      data: input.datasetSha256,
      seed,
      config,
    }),
  );
}

export interface ResolveStageInput {
  lineage: string;
  stage: StageSpec;
  parent: ModelHandle;
  rewardModel?: ModelHandle;
  datasetSha256: string;
  /** The lineage seed (used when the stage sets none). */
  seed: number;
}
export interface ResolveStageResult {
  stageKey: string;
  cached: StageCacheRecord | null;
}

/**
 * Computes the stage key and looks it up. Also claims the stage's place in this lineage's store
 * layout: a lineage cannot hold two different trainings under one stage id, because their
 * checkpoints would share keys. Safe to retry (the claim is idempotent for the same key).
 */
export async function resolveStage(input: ResolveStageInput): Promise<ResolveStageResult> {
  const key = stageKey(input);
  const markerKey = `${storeKeys.lineageRoot(input.lineage)}/${input.stage.id}/stage.json`;
  const marker = await getJsonIfExists(uriOf(markerKey), StageMarker);
  if (marker && marker.stageKey !== key) {
    // The same spec gives the same conflict: retrying cannot help; a new lineage name does.
    throw ApplicationFailure.nonRetryable(
      `lineage "${input.lineage}" already has a stage "${input.stage.id}" trained with a different configuration, data or parent; start the changed spec under a new lineage name`,
      'StageConflict',
    );
  }
  if (!marker) await putJson(markerKey, { stageKey: key });
  const cached = await getJsonIfExists(uriOf(storeKeys.stageCache(key)), StageCacheRecord);
  return { stageKey: key, cached: cached ?? null };
}

/** Written after a stage's training completed and all its checkpoints are in the store. Idempotent. */
export async function recordStageCache(record: StageCacheRecord): Promise<ArtifactRef> {
  return putJson(storeKeys.stageCache(record.stageKey), StageCacheRecord.parse(record));
}

export const EvalCacheRecord = z.object({
  evalKey: z.string(),
  summary: ArtifactRef,
  v: z.record(z.string(), StanceProbs),
});
export type EvalCacheRecord = z.infer<typeof EvalCacheRecord>;

export function evaluationKey(input: {
  model: ModelHandle;
  promptStyle: string;
  evaluation: EvaluationSpec;
  evalSetSha256: string;
  seed: number;
  promptVersion: string;
  /** The judge model actually asked (worker env may override the spec's). */
  judgeModel: string;
}): string {
  const e = input.evaluation;
  return sha256Hex(
    canonicalJson({
      v: EVALUATION_VERSION,
      model: input.model.contentKey,
      promptStyle: input.promptStyle,
      evalSet: input.evalSetSha256,
      seed: input.seed,
      promptVersion: input.promptVersion,
      gen: [e.generationsPerPrompt, e.temperature, e.maxNewTokens, e.baseResponseSuffix, e.promptsPerCategory ?? null],
      judge: [input.judgeModel, e.judge.topLogprobs],
      topics: e.topics,
    }),
  );
}

export interface LookupEvaluationInput {
  lineage: string;
  stageId: string;
  step: number;
  totalSteps: number;
  model: ModelHandle;
  promptStyle: string;
  evaluation: EvaluationSpec;
  evalSet: ArtifactRef;
  seed: number;
}
export interface LookupEvaluationResult {
  evalKey: string;
  hit: { summary: ArtifactRef; v: Record<string, StanceProbs> } | null;
}

/**
 * On a hit, copies the cached summary into this lineage's layout under this stage and step (the
 * numbers are the same checkpoint's; only the coordinates change), so every lineage's store is
 * self-describing. Safe to retry.
 */
export async function lookupEvaluation(input: LookupEvaluationInput): Promise<LookupEvaluationResult> {
  const evalKey = evaluationKey({
    model: input.model,
    promptStyle: input.promptStyle,
    evaluation: input.evaluation,
    evalSetSha256: input.evalSet.sha256,
    seed: input.seed,
    promptVersion: JUDGE_PROMPT_VERSION,
    judgeModel: workerEnv().VALUEDRIFT_JUDGE_MODEL ?? input.evaluation.judge.model,
  });
  const rec = await getJsonIfExists(uriOf(storeKeys.evalCache(evalKey)), EvalCacheRecord);
  if (!rec) return { evalKey, hit: null };
  const cached = CheckpointSummary.parse(JSON.parse((await getVerified(rec.summary)).toString('utf8')));
  const here = { ...cached, lineage: input.lineage, stageId: input.stageId, step: input.step, totalSteps: input.totalSteps };
  const key = `${storeKeys.evalDir(input.lineage, input.stageId, input.step)}/summary.json`;
  const summary = rec.summary.uri === uriOf(key) ? rec.summary : await putJson(key, here);
  return { evalKey, hit: { summary, v: rec.v } };
}

export async function recordEvaluation(rec: EvalCacheRecord): Promise<void> {
  await putJson(storeKeys.evalCache(rec.evalKey), EvalCacheRecord.parse(rec));
}
