/**
 * A test workflow for GPU scheduling: runs stand-in GPU jobs through the real activity proxies
 * (workflows/proxies.ts), so that each job goes to the task queue a lineage's would.
 */
import { proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../../activities';
import { TASK_QUEUES } from '../../common/config';
import { generation, trainingOn } from '../../workflows/proxies';

export interface Job {
  name: string;
  kind: 'train' | 'generate';
  gpus: number;
  /** How long the stand-in holds its GPUs. */
  ms: number;
  /** Scheduled on the plain gpu queue, as workflows from before per-size queues did. */
  legacy?: boolean;
}

// The plain gpu queue with the training proxy's policy, but quick retries (the test waits for them).
const legacyTraining = proxyActivities<Pick<Activities, 'trainStage'>>({
  taskQueue: TASK_QUEUES.gpu,
  startToCloseTimeout: '2 minutes',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '200ms', backoffCoefficient: 1, maximumAttempts: 50 },
});

/** Runs the jobs concurrently; returns what each stand-in returned (the node that ran it). */
export async function gpuJobs(jobs: Job[]): Promise<string[]> {
  return Promise.all(
    jobs.map(async (j) => {
      const input = { name: j.name, ms: j.ms, stage: { gpus: j.gpus } } as never;
      if (j.kind === 'generate') return String(await generation.generateResponses(input));
      if (j.legacy) return String(await legacyTraining.trainStage(input));
      return String(await trainingOn(j.gpus).trainStage(input));
    }),
  );
}
