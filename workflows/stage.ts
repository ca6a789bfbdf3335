import {
  ApplicationFailure,
  condition,
  defineQuery,
  defineSignal,
  executeChild,
  getExternalWorkflowHandle,
  ParentClosePolicy,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { ArtifactRef, CheckpointAnnouncement, ModelHandle } from '../common/contracts';
import { QUERIES, SIGNALS, TASK_QUEUES, workflowIds } from '../common/config';
import type { EvaluationSpec, StageSpec } from '../common/spec';
import type { PreparedDataset } from '../activities/datasets';
import type { DriftRow } from '../activities/evaluation';
import { store, training } from './proxies';
import { evaluateCheckpointWorkflow, type EvaluateCheckpointResult } from './evaluate';

export const checkpointReadySignal = defineSignal<[CheckpointAnnouncement]>(SIGNALS.checkpointReady);
export const startEvaluatedSignal = defineSignal<[EvaluateCheckpointResult | null]>(SIGNALS.startEvaluated);

export interface StageEvent {
  stageId: string;
  type: 'checkpoint' | 'evaluated' | 'cached';
  step: number;
  totalSteps: number;
  loss?: number | null;
}
export const stageEventSignal = defineSignal<[StageEvent]>(SIGNALS.stageEvent);

export interface StageProgress {
  stageId: string;
  kind: StageSpec['kind'];
  status: 'resolving' | 'training' | 'cached' | 'evaluating' | 'drift' | 'done';
  totalSteps: number;
  checkpoints: number[];
  evaluated: number[];
  latestLoss: number | null;
  stageKey?: string;
}
export const stageProgressQuery = defineQuery<StageProgress>(QUERIES.progress);

export interface StageWorkflowInput {
  lineage: string;
  stage: StageSpec;
  parent: ModelHandle;
  rewardModel?: ModelHandle;
  dataset: PreparedDataset;
  evaluation: EvaluationSpec;
  evalSet: ArtifactRef;
  seed: number;
  /** The evaluation of the starting point when already known; otherwise it arrives by signal. */
  startEval?: EvaluateCheckpointResult;
}

export interface StageWorkflowResult {
  stageId: string;
  kind: StageSpec['kind'];
  stageKey: string;
  cached: boolean;
  totalSteps: number;
  final: ModelHandle;
  finalEval: EvaluateCheckpointResult;
  checkpoints: number[];
  drift: ArtifactRef;
  driftRows: DriftRow[];
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

/**
 * Trains one stage and evaluates every checkpoint as soon as it is announced (evaluation overlaps
 * training), then computes the stage's drift. Safe to re-run: a stage whose key has a complete
 * record in the store is not trained again. Writes checkpoints, evaluations and drift.json.
 */
export async function stageWorkflow(input: StageWorkflowInput): Promise<StageWorkflowResult> {
  const { lineage, stage } = input;
  const progress: StageProgress = {
    stageId: stage.id,
    kind: stage.kind,
    status: 'resolving',
    totalSteps: 0,
    checkpoints: [],
    evaluated: [],
    latestLoss: null,
  };
  setHandler(stageProgressQuery, () => progress);
  /** undefined: not known yet; null: the starting point's evaluation failed. */
  let startEval: EvaluateCheckpointResult | null | undefined = input.startEval;
  setHandler(startEvaluatedSignal, (e) => {
    startEval = e;
  });

  const parentId = workflowInfo().parent?.workflowId;
  const tellParent = async (e: StageEvent) => {
    if (parentId) await getExternalWorkflowHandle(parentId).signal(stageEventSignal, e);
  };
  const outbox: StageEvent[] = [];

  const evals = new Map<number, Settled<EvaluateCheckpointResult> | 'running'>();
  const checkpoints = new Map<number, CheckpointAnnouncement>();
  const startEvaluation = (a: CheckpointAnnouncement) => {
    if (evals.has(a.step)) return; // announcements repeat when the training activity retries
    evals.set(a.step, 'running');
    executeChild(evaluateCheckpointWorkflow, {
      workflowId: workflowIds.evaluation(lineage, stage.id, a.step),
      taskQueue: TASK_QUEUES.workflows,
      parentClosePolicy: ParentClosePolicy.TERMINATE,
      args: [
        {
          lineage,
          stageId: stage.id,
          step: a.step,
          totalSteps: a.totalSteps,
          model: { uri: a.ref.uri.replace(/\/manifest\.json$/, ''), manifest: a.ref, contentKey: a.ref.sha256 },
          promptStyle: 'chat',
          evaluation: input.evaluation,
          evalSet: input.evalSet,
          seed: input.seed,
        },
      ],
    }).then(
      (value) => {
        evals.set(a.step, { ok: true, value });
        progress.evaluated = [...progress.evaluated, a.step].sort((x, y) => x - y);
        outbox.push({ stageId: stage.id, type: 'evaluated', step: a.step, totalSteps: a.totalSteps });
      },
      (error: unknown) => {
        evals.set(a.step, { ok: false, error });
      },
    );
  };
  const onCheckpoint = (a: CheckpointAnnouncement) => {
    if (a.stageId !== stage.id || checkpoints.has(a.step)) return;
    checkpoints.set(a.step, a);
    progress.checkpoints = [...checkpoints.keys()].sort((x, y) => x - y);
    progress.totalSteps = Math.max(progress.totalSteps, a.totalSteps);
    if (a.loss !== undefined && a.loss !== null) progress.latestLoss = a.loss;
    outbox.push({ stageId: stage.id, type: 'checkpoint', step: a.step, totalSteps: a.totalSteps, loss: a.loss ?? null });
    startEvaluation(a);
  };
  setHandler(checkpointReadySignal, onCheckpoint);

  const resolved = await store.resolveStage({
    lineage,
    stage,
    parent: input.parent,
    rewardModel: input.rewardModel,
    datasetSha256: input.dataset.ref.sha256,
    seed: input.seed,
  });
  progress.stageKey = resolved.stageKey;
  let result = resolved.cached;
  const trainingDone = { value: false };
  if (result) {
    progress.status = 'cached';
    outbox.push({ stageId: stage.id, type: 'cached', step: result.final.step, totalSteps: result.totalSteps });
  } else {
    progress.status = 'training';
    const trained = training.trainStage({
      lineage,
      stageKey: resolved.stageKey,
      stage,
      parent: input.parent,
      rewardModel: input.rewardModel,
      dataset: input.dataset,
      seed: input.seed,
    });
    // Forward stage events to the lineage while training runs.
    const markDone = () => {
      trainingDone.value = true;
    };
    void trained.then(markDone, markDone); // the error itself is rethrown by `await trained` below
    while (!trainingDone.value) {
      await condition(() => outbox.length > 0 || trainingDone.value);
      await flush(outbox, tellParent);
    }
    const t = await trained;
    result = {
      stageKey: resolved.stageKey,
      stageId: stage.id,
      lineage,
      totalSteps: t.totalSteps,
      checkpoints: t.checkpoints,
      final: t.final,
    };
  }
  // Every checkpoint of the result is evaluated, whether or not its announcement arrived.
  for (const c of result.checkpoints) onCheckpoint({ stageId: stage.id, step: c.step, totalSteps: result.totalSteps, ref: c.ref, loss: null });
  progress.totalSteps = result.totalSteps;
  if (!resolved.cached) await store.recordStageCache(result);

  progress.status = 'evaluating';
  while ([...evals.values()].some((e) => e === 'running') || outbox.length > 0) {
    await condition(() => outbox.length > 0 || ![...evals.values()].some((e) => e === 'running'));
    await flush(outbox, tellParent);
  }
  const failed = [...evals.entries()].find(([, e]) => e !== 'running' && !e.ok);
  if (failed) {
    const e = failed[1] as { ok: false; error: unknown };
    throw e.error;
  }
  const byStep = new Map([...evals.entries()].map(([s, e]) => [s, (e as { ok: true; value: EvaluateCheckpointResult }).value]));
  const finalEval = byStep.get(result.final.step);
  if (!finalEval) throw new Error(`final checkpoint ${result.final.step} of ${stage.id} has no evaluation`);

  progress.status = 'drift';
  await condition(() => startEval !== undefined);
  if (startEval === null) {
    throw ApplicationFailure.nonRetryable(`stage ${stage.id}: the evaluation of its starting point failed, so drift cannot be computed`, 'StartEvaluationFailed');
  }
  const steps = [...byStep.keys()].sort((a, b) => a - b);
  const drift = await store.computeDrift({
    lineage,
    stageId: stage.id,
    totalSteps: result.totalSteps,
    start: (startEval as EvaluateCheckpointResult).summary,
    checkpoints: steps.map((s) => (byStep.get(s) as EvaluateCheckpointResult).summary),
  });
  progress.status = 'done';
  return {
    stageId: stage.id,
    kind: stage.kind,
    stageKey: resolved.stageKey,
    cached: resolved.cached !== null,
    totalSteps: result.totalSteps,
    final: {
      uri: result.final.ref.uri.replace(/\/manifest\.json$/, ''),
      manifest: result.final.ref,
      contentKey: result.final.ref.sha256,
    },
    finalEval,
    checkpoints: steps,
    drift: drift.drift,
    driftRows: drift.rows,
  };
}

async function flush(outbox: StageEvent[], send: (e: StageEvent) => Promise<void>): Promise<void> {
  while (outbox.length) {
    const e = outbox.shift() as StageEvent;
    await send(e);
  }
}
