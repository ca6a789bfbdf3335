/**
 * The stage cache (like Flyte's or Metaflow's): a stage whose content key already has a complete
 * record is not trained again. Also the lineage's claim on its name: what a lineage name was first
 * trained with (base model weights, datasets, stage configurations, seed) cannot change under it.
 * (The evaluation cache is in evaluation/lookup.ts.)
 *
 * Stage key = sha256(parent weights' content key, reward model's content key, the stage's config
 * without its id/parent/dataset name, the effective seed, the training data's sha256, trainer
 * protocol version).
 */
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { type ArtifactRef, Checkpoint, type ModelHandle } from '../common/contracts';
import { storeKeys } from '../common/config';
import type { StageSpec } from '../common/spec';
import { canonicalJson } from './judge/cache';
import { getJsonIfExists, putJson, sha256Hex, uriOf } from './store';

/** Bump when the trainer's behaviour changes in a way that makes old checkpoints incomparable. */
export const TRAINER_PROTOCOL_VERSION = 'trainer-v1';

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

/** A stage's training configuration: everything but its names (id, parent, dataset name) and seed. */
/**
 * The settings that shape a stage's weights. `reportTo` is left out: where the curves are also
 * sent (W&B, MLflow) does not change what is trained, so adding it reuses the cached stage.
 */
function stageConfig(stage: StageSpec): Record<string, unknown> {
  const { id: _id, parent: _parent, dataset: _dataset, seed: _seed, reportTo: _reportTo, ...config } = stage;
  // The defaults spelled out name the same training as leaving them out (and as specs from before them).
  if (config.parallelism === 'ddp') delete config.parallelism;
  if (config.nodes === 1) delete config.nodes;
  return config;
}

export function stageKey(input: { stage: StageSpec; parent: ModelHandle; rewardModel?: ModelHandle; datasetSha256: string; seed: number }): string {
  const config = stageConfig(input.stage);
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
  const markerKey = storeKeys.stageMarker(input.lineage, input.stage.id);
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

/** What a lineage name is bound to: the first run's base model, and each stage's training inputs. */
export const LineageRecord = z.object({
  lineage: z.string(),
  base: z.object({ uri: z.string(), contentKey: z.string() }),
  stages: z.record(
    z.string(),
    z.object({ kind: z.string(), parent: z.string(), rewardStage: z.string().nullable(), dataset: z.string(), seed: z.number().int(), config: z.string() }),
  ),
});
export type LineageRecord = z.infer<typeof LineageRecord>;

export interface ClaimLineageInput {
  lineage: string;
  base: ModelHandle;
  stages: StageSpec[];
  /** Dataset name → sha256 of the prepared rows. */
  datasets: Record<string, string>;
  seed: number;
}

function describeStages(input: ClaimLineageInput): LineageRecord['stages'] {
  return Object.fromEntries(
    input.stages.map((s) => [
      s.id,
      {
        kind: s.kind,
        parent: s.parent,
        rewardStage: s.kind === 'ppo' ? s.rewardStage : null,
        dataset: input.datasets[s.dataset] ?? `missing:${s.dataset}`,
        seed: s.seed ?? input.seed,
        config: canonicalJson(stageConfig(s)),
      },
    ]),
  );
}

/** What differs between a lineage's record and a new run of it, in words (empty: nothing that matters). */
export function lineageDifferences(was: LineageRecord, now: LineageRecord): string[] {
  const out: string[] = [];
  if (was.base.contentKey !== now.base.contentKey) {
    out.push(was.base.uri === now.base.uri ? `the base model ${now.base.uri} has other weights than when the lineage was first run` : `base model: was ${was.base.uri}, now ${now.base.uri}`);
  }
  for (const [id, n] of Object.entries(now.stages)) {
    const w = was.stages[id];
    if (!w) continue; // a stage added to the lineage is fine
    if (w.kind !== n.kind) out.push(`stage ${id}: kind was ${w.kind}, now ${n.kind}`);
    if (w.parent !== n.parent) out.push(`stage ${id}: parent was ${w.parent}, now ${n.parent}`);
    if (w.rewardStage !== n.rewardStage) out.push(`stage ${id}: reward stage was ${w.rewardStage}, now ${n.rewardStage}`);
    if (w.dataset !== n.dataset) out.push(`stage ${id}: its dataset's content changed`);
    if (w.seed !== n.seed) out.push(`stage ${id}: seed was ${w.seed}, now ${n.seed}`);
    if (w.kind === n.kind && w.config !== n.config) out.push(`stage ${id}: hyperparameters or settings changed`);
  }
  return out;
}

/**
 * Binds a lineage name to what it trains, before anything is trained or evaluated: a run whose base
 * model weights, datasets or stage settings differ from the name's first run is refused, naming what
 * changed (its checkpoints would land on the first run's). Evaluation settings are not bound: a run
 * with another judge, eval set, temperature or sample count is evaluated afresh under new keys.
 * New stages are added to the record. Safe to retry.
 */
export async function claimLineage(input: ClaimLineageInput): Promise<void> {
  const now: LineageRecord = { lineage: input.lineage, base: { uri: input.base.uri, contentKey: input.base.contentKey }, stages: describeStages(input) };
  const key = storeKeys.lineageRecord(input.lineage);
  const was = await getJsonIfExists(uriOf(key), LineageRecord);
  if (was) {
    const diff = lineageDifferences(was, now);
    if (diff.length > 0) {
      // The same spec gives the same refusal: retrying cannot help; a new lineage name does.
      throw ApplicationFailure.nonRetryable(
        `lineage "${input.lineage}" was first run with other training inputs (${diff.join('; ')}); start the changed spec under a new lineage name (unchanged stages are served from the cache)`,
        'LineageConflict',
        diff,
      );
    }
  }
  await putJson(key, { ...now, stages: { ...(was?.stages ?? {}), ...now.stages } });
}
