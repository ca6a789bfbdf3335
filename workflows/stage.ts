import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  condition,
  defineQuery,
  defineSignal,
  executeChild,
  log,
  ParentClosePolicy,
  setHandler,
  sleep,
  uuid4,
} from '@temporalio/workflow';
import { CheckpointAnnouncement, type ArtifactRef, type ModelHandle } from '../common/contracts';
import { checkpointDirUri, QUERIES, SIGNALS, TASK_QUEUES, workflowIds } from '../common/config';
import type { EvaluationSpec, StageSpec } from '../common/spec';
import type { PreparedDataset } from '../activities/datasets';
import type { TrainStageInput, TrainStageResult } from '../activities/training';
import { GROUP_RETRY, store, trainingGroupOn, trainingOn, type GroupRetry } from './proxies';
import { evaluateCheckpointWorkflow, type EvaluateCheckpointResult } from './evaluate';

/** The training activity's announcement: a checkpoint is uploaded completely (the only signal). */
export const checkpointReadySignal = defineSignal<[CheckpointAnnouncement]>(SIGNALS.checkpointReady);

export interface StageProgress {
  stageId: string;
  kind: StageSpec['kind'];
  status: 'resolving' | 'training' | 'cached' | 'evaluating' | 'done';
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
}

/** One checkpoint's evaluation as the stage returns it: the step and its content-addressed summary. */
export interface StageEvaluation {
  step: number;
  evalKey: string;
  summary: ArtifactRef;
}

export interface StageWorkflowResult {
  stageId: string;
  kind: StageSpec['kind'];
  stageKey: string;
  cached: boolean;
  totalSteps: number;
  final: ModelHandle;
  checkpoints: number[];
  /** Every checkpoint's evaluation, by step; empty for a reward stage (a reward model has no stance). */
  evaluations: StageEvaluation[];
  /** The final checkpoint's evaluation: the starting point of the stages that continue from this one. */
  finalEval: EvaluateCheckpointResult | null;
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** A stored checkpoint as a model to start from or evaluate. */
export function checkpointModel(ref: ArtifactRef): ModelHandle {
  return { uri: checkpointDirUri(ref.uri), manifest: ref, contentKey: ref.sha256 };
}

/**
 * A multi-node stage's training: the leader (`trainStage`, machine rank 0, which uploads and announces
 * the checkpoints) and `nodes` − 1 followers (`trainStageFollower`, ranks 1..nodes − 1) run together,
 * sharing a rendezvous token made here per group attempt. When any member fails, the others are
 * cancelled (and waited for), and the whole group runs again with a new token after a backoff, up to
 * GROUP_RETRY's attempts; a non-retryable failure ends it at once. Each attempt's leader resumes from
 * the last checkpoint uploaded, as a single node's retry does.
 */
export async function trainGroup(input: TrainStageInput, retry: GroupRetry = GROUP_RETRY): Promise<TrainStageResult> {
  const { stage } = input;
  const nodes = stage.nodes ?? 1;
  const { leader, follower } = trainingGroupOn(stage.gpus);
  for (let attempt = 1; ; attempt++) {
    const token = uuid4();
    let first: unknown;
    const scope = new CancellationScope();
    const settled = await scope.run(() => {
      const members: Promise<unknown>[] = [
        leader.trainStage({ ...input, group: { token, nodes } }),
        ...Array.from({ length: nodes - 1 }, (_, i) =>
          follower.trainStageFollower({
            lineage: input.lineage,
            stageKey: input.stageKey,
            stage,
            parent: input.parent,
            rewardModel: input.rewardModel,
            token,
            nodes,
            rank: i + 1,
          }),
        ),
      ];
      for (const m of members) {
        m.catch((err: unknown) => {
          first ??= err;
          scope.cancel();
        });
      }
      return Promise.allSettled(members);
    });
    const lead = settled[0];
    // The leader's success is the stage's: every checkpoint is uploaded and announced.
    if (lead?.status === 'fulfilled') return lead.value as TrainStageResult;
    if (CancellationScope.current().consideredCancelled) throw first;
    const cause = first instanceof ActivityFailure ? first.cause : first;
    const final = cause instanceof ApplicationFailure && cause.nonRetryable;
    if (final || attempt >= retry.maximumAttempts) throw first;
    const waitMs = Math.min(retry.maximumIntervalMs, retry.initialIntervalMs * retry.backoffCoefficient ** (attempt - 1));
    log.warn('multi-node group failed; running the whole group again', {
      stageId: stage.id,
      attempt,
      nodes,
      error: first instanceof Error ? first.message : String(first),
      retryInMs: waitMs,
    });
    await sleep(waitMs);
  }
}

/**
 * Trains one stage and, for a policy stage, evaluates every checkpoint as soon as the training
 * activity announces it (evaluation overlaps training); returns the final model and the evaluations
 * to its parent, which computes drift. A reward stage yields a reward model for PPO: it is not
 * evaluated for stance. Safe to re-run: a stage whose key has a complete record in the store is not
 * trained again. Writes checkpoints (through the training activity) and evaluations.
 */
export async function stageWorkflow(input: StageWorkflowInput): Promise<StageWorkflowResult> {
  const { lineage, stage } = input;
  const evaluates = stage.kind !== 'reward';
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

  const evals = new Map<number, Settled<EvaluateCheckpointResult> | 'running'>();
  const checkpoints = new Map<number, CheckpointAnnouncement>();
  const startEvaluation = (a: CheckpointAnnouncement) => {
    if (!evaluates || evals.has(a.step)) return; // announcements repeat when the training activity retries
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
          model: checkpointModel(a.ref),
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
      },
      (error: unknown) => {
        evals.set(a.step, { ok: false, error });
      },
    );
  };
  const onCheckpoint = (payload: unknown) => {
    // Whoever can signal this workflow can send anything: only a well-formed announcement of a
    // checkpoint manifest is used; anything else is logged and ignored.
    const parsed = CheckpointAnnouncement.safeParse(payload);
    if (!parsed.success || !parsed.data.ref.uri.endsWith('/manifest.json')) {
      log.warn('ignored an invalid checkpointReady announcement', {
        stageId: stage.id,
        problems: parsed.success ? ['ref.uri: not a checkpoint manifest'] : parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`),
      });
      return;
    }
    const a = parsed.data;
    if (a.stageId !== stage.id || checkpoints.has(a.step)) return;
    checkpoints.set(a.step, a);
    progress.checkpoints = [...checkpoints.keys()].sort((x, y) => x - y);
    progress.totalSteps = Math.max(progress.totalSteps, a.totalSteps);
    if (a.loss !== undefined && a.loss !== null) progress.latestLoss = a.loss;
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
  if (result) {
    progress.status = 'cached';
  } else {
    progress.status = 'training';
    const train = (stage.nodes ?? 1) > 1 ? (i: TrainStageInput) => trainGroup(i) : trainingOn(stage.gpus).trainStage;
    const t = await train({
      lineage,
      stageKey: resolved.stageKey,
      stage,
      parent: input.parent,
      rewardModel: input.rewardModel,
      dataset: input.dataset,
      seed: input.seed,
    });
    result = { stageKey: resolved.stageKey, stageId: stage.id, lineage, totalSteps: t.totalSteps, checkpoints: t.checkpoints, final: t.final };
    await store.recordStageCache(result);
  }
  // Every checkpoint of the result is evaluated, whether or not its announcement arrived.
  for (const c of result.checkpoints) onCheckpoint({ stageId: stage.id, step: c.step, totalSteps: result.totalSteps, ref: c.ref, loss: null });
  progress.totalSteps = result.totalSteps;

  progress.status = 'evaluating';
  await condition(() => ![...evals.values()].some((e) => e === 'running'));
  const failed = [...evals.values()].find((e): e is { ok: false; error: unknown } => e !== 'running' && !e.ok);
  if (failed) throw failed.error;
  const byStep = new Map([...evals.entries()].map(([s, e]) => [s, (e as { ok: true; value: EvaluateCheckpointResult }).value]));
  const finalEval = byStep.get(result.final.step) ?? null;
  if (evaluates && !finalEval) throw new Error(`final checkpoint ${result.final.step} of ${stage.id} has no evaluation`);
  const steps = result.checkpoints.map((c) => c.step).sort((a, b) => a - b);
  progress.status = 'done';
  return {
    stageId: stage.id,
    kind: stage.kind,
    stageKey: resolved.stageKey,
    cached: resolved.cached !== null,
    totalSteps: result.totalSteps,
    final: checkpointModel(result.final.ref),
    checkpoints: steps,
    evaluations: [...byStep.values()].sort((a, b) => a.step - b.step).map((e) => ({ step: e.step, evalKey: e.evalKey, summary: e.summary })),
    finalEval,
  };
}
