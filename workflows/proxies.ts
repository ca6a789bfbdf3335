/**
 * Activity proxies, one per group, each with the reason for its bounds. Only the `Activities` type
 * is imported: activity code never enters the workflow bundle.
 */
import { ActivityCancellationType, patched, proxyActivities, type ActivityOptions } from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { trainStageFollower } from '../activities/multinode';
import { gpuMultiNodeTaskQueue, gpuTaskQueue, TASK_QUEUES } from '../common/config';

/**
 * Training runs for hours to days. The activity heartbeats every 5 s from its own timer, so a crashed
 * worker is noticed within a minute; the retry resumes from the last uploaded checkpoint, so retries
 * are cheap and many.
 */
const TRAINING: ActivityOptions = {
  taskQueue: TASK_QUEUES.gpu,
  startToCloseTimeout: '14 days',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '10s', backoffCoefficient: 2, maximumInterval: '10 minutes', maximumAttempts: 20 },
};
export const training = proxyActivities<Pick<Activities, 'trainStage'>>(TRAINING);

/** Workflows from before per-size GPU queues scheduled every training on the plain gpu queue. */
export const GPU_QUEUES_PATCH = 'gpu-queues-per-size';

/**
 * Training on `gpus` GPUs, on the queue that only workers with at least that many poll
 * (`gpuTaskQueue`): it waits there, retries included, for a node that fits. A 0-GPU stage stays on
 * the plain gpu queue (any gpu worker). Histories recorded before this routing replay on the plain queue.
 */
export function trainingOn(gpus: number): typeof training {
  if (gpus <= 0 || !patched(GPU_QUEUES_PATCH)) return training;
  return proxyActivities<Pick<Activities, 'trainStage'>>({ ...TRAINING, taskQueue: gpuTaskQueue(gpus) });
}

/**
 * A multi-node group's retries (workflows/stage.ts `trainGroup`): the same bounds as a single node's
 * training, applied to the whole group, since one member cannot be retried alone (its peers' processes
 * are gone with the failed collective).
 */
export interface GroupRetry {
  initialIntervalMs: number;
  backoffCoefficient: number;
  maximumIntervalMs: number;
  maximumAttempts: number;
}
export const GROUP_RETRY: GroupRetry = { initialIntervalMs: 10_000, backoffCoefficient: 2, maximumIntervalMs: 10 * 60_000, maximumAttempts: 20 };

/**
 * The members of a multi-node group on `gpus` GPUs each: the leader (`trainStage`, rank 0) and the
 * followers, on the multi-node queue of that size (polled only by gpu workers with a shared dir). Each
 * runs once per group attempt (the workflow retries the group), and a cancelled member is waited for
 * until its worker has stopped it, so that a new attempt never overlaps the processes of the old one.
 */
export function trainingGroupOn(gpus: number): {
  leader: Pick<Activities, 'trainStage'>;
  follower: { trainStageFollower: typeof trainStageFollower };
} {
  const options: ActivityOptions = {
    ...TRAINING,
    taskQueue: gpuMultiNodeTaskQueue(gpus),
    retry: { maximumAttempts: 1 },
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  };
  return {
    leader: proxyActivities<Pick<Activities, 'trainStage'>>(options),
    follower: proxyActivities<{ trainStageFollower: typeof trainStageFollower }>(options),
  };
}

/**
 * Generating 5 × 550 answers takes minutes on a GPU, an hour or so on CPU; the activity heartbeats
 * every 5 s, so a lost worker is noticed within a minute (the retry regenerates that checkpoint).
 */
const GENERATION = {
  taskQueue: TASK_QUEUES.gpu,
  startToCloseTimeout: '6 hours',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '10s', backoffCoefficient: 2, maximumInterval: '5 minutes', maximumAttempts: 10 },
} as const;
export const generation = proxyActivities<Pick<Activities, 'generateResponses'>>(GENERATION);

/**
 * Generation on `gpus` GPUs (`evaluation.generationGpus`, tensor or data parallel) waits on the queue
 * that only nodes with that many GPUs poll, like training. One GPU (and every evaluation recorded
 * before the setting existed) stays on the plain gpu queue.
 */
export function generationOn(gpus: number | undefined): typeof generation {
  if (gpus === undefined || gpus <= 1) return generation;
  return proxyActivities<Pick<Activities, 'generateResponses'>>({ ...GENERATION, taskQueue: gpuTaskQueue(gpus) });
}

/**
 * Judging is bounded by the provider's rate limits; the activity backs off itself (Retry-After) and
 * caches every answer, so an activity retry only repeats what was not yet judged.
 */
export const judging = proxyActivities<Pick<Activities, 'judgeResponses'>>({
  taskQueue: TASK_QUEUES.cpu,
  startToCloseTimeout: '12 hours',
  // Heartbeats come from a 10 s timer, also while a Retry-After wait is in progress.
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '30s', backoffCoefficient: 2, maximumInterval: '30 minutes', maximumAttempts: 20 },
});

/**
 * A base model's content key: hashing its weights where the trainer is installed (GPU queue). A
 * packaged model hashes in a second; a large local one can take minutes, so the activity heartbeats.
 */
export const models = proxyActivities<Pick<Activities, 'resolveBaseModel'>>({
  taskQueue: TASK_QUEUES.gpu,
  startToCloseTimeout: '1 hour',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '5s', backoffCoefficient: 2, maximumInterval: '2 minutes', maximumAttempts: 10 },
});

/**
 * Store reads/writes, hashing, metrics and rendering take seconds. These activities do not heartbeat,
 * so the start-to-close bound is also how long a lost worker can hold one: keep it short.
 */
export const store = proxyActivities<
  Pick<Activities, 'claimLineage' | 'resolveStage' | 'recordStageCache' | 'lookupEvaluation' | 'summariseEvaluation' | 'computeDrift' | 'writeReport'>
>({
  taskQueue: TASK_QUEUES.cpu,
  startToCloseTimeout: '2 minutes',
  retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '2 minutes', maximumAttempts: 10 },
});

/**
 * Reading datasets can mean exporting a hub dataset (minutes to hours); the activity heartbeats, so
 * a lost worker is noticed within two minutes.
 */
export const datasets = proxyActivities<Pick<Activities, 'prepareDatasets'>>({
  taskQueue: TASK_QUEUES.cpu,
  startToCloseTimeout: '6 hours',
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '5s', backoffCoefficient: 2, maximumInterval: '5 minutes', maximumAttempts: 10 },
});
