/**
 * Worker entry: `VALUEDRIFT_WORKER_ROLE=cpu|gpu|all npm run worker`.
 * - cpu: workflow tasks plus judge, store, metrics and report activities;
 * - gpu: training and generation; as many concurrent jobs as GPUs per node / GPUs per job.
 * Every setting comes from activities/env.ts (the worker's settings module).
 */
import * as path from 'node:path';
import { Worker, type WorkerOptions } from '@temporalio/worker';
import { createActivities } from '../activities';
import { type WorkerRole, workerEnv } from '../activities/env';
import { gpuPool } from '../activities/gpus';
import { trainerPythonProblem } from '../activities/trainerCommand';
import { TASK_QUEUES } from '../common/config';
import { nativeConnection, temporalClient } from './connection';

/** Concurrent GPU jobs: GPUs per node / GPUs per job; one job at a time on a CPU-only node. */
export function gpuSlots(gpus: number, perJob: number): number {
  if (gpus <= 0) return 1;
  return Math.max(1, Math.floor(gpus / Math.max(1, perJob)));
}

export async function runWorkers(role: WorkerRole, opts: { signal?: AbortSignal } = {}): Promise<void> {
  const env = workerEnv();
  if (role !== 'cpu') {
    // Every job on the gpu queue runs the trainer: refuse to poll rather than fail each job.
    const problem = trainerPythonProblem();
    if (problem) throw new Error(`gpu worker: ${problem}`);
  }
  const connection = await nativeConnection(env);
  const client = await temporalClient(env);
  const activities = createActivities({ client });
  const namespace = env.TEMPORAL_NAMESPACE;
  const workers: Worker[] = [];
  const base: Pick<WorkerOptions, 'connection' | 'namespace'> = { connection, namespace };
  if (role === 'cpu' || role === 'all') {
    workers.push(
      await Worker.create({ ...base, taskQueue: TASK_QUEUES.workflows, workflowsPath: path.join(__dirname, '..', 'workflows', 'index.ts') }),
      await Worker.create({
        ...base,
        taskQueue: TASK_QUEUES.cpu,
        activities,
        maxConcurrentActivityTaskExecutions: env.VALUEDRIFT_CPU_CONCURRENCY,
      }),
    );
  }
  if (role === 'gpu' || role === 'all') {
    const slots = gpuSlots(gpuPool().size, env.VALUEDRIFT_GPUS_PER_JOB);
    workers.push(
      await Worker.create({
        ...base,
        taskQueue: TASK_QUEUES.gpu,
        activities,
        maxConcurrentActivityTaskExecutions: slots,
        // Heartbeats carry the step and loss that `lineage status` and the UI show; the SDK's default
        // throttle (up to 80 % of the heartbeat timeout) would leave them most of a minute stale.
        maxHeartbeatThrottleInterval: '10 seconds',
        defaultHeartbeatThrottleInterval: '5 seconds',
      }),
    );
    console.error(`[worker] gpu role: ${slots} concurrent job(s) over GPUs [${gpuPool().devices.join(', ')}]`);
  }
  opts.signal?.addEventListener('abort', () => workers.forEach((w) => w.shutdown()));
  console.error(`[worker] role ${role} polling ${workers.length} queue(s) on ${env.TEMPORAL_ADDRESS}`);
  try {
    await Promise.all(workers.map((w) => w.run()));
  } finally {
    await client.connection.close();
    await connection.close();
  }
}

if (require.main === module) {
  let role: WorkerRole;
  try {
    role = workerEnv().VALUEDRIFT_WORKER_ROLE;
  } catch (err) {
    // A malformed variable: one line naming it, not a stack trace.
    console.error((err as Error).message);
    process.exit(2);
  }
  runWorkers(role).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
