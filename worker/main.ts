/**
 * Worker entry: `VALUEDRIFT_WORKER_ROLE=cpu|gpu|all npm run worker`.
 * - cpu: workflow tasks plus judge, store, metrics and report activities;
 * - gpu: training and generation; as many concurrent jobs as GPUs per node / GPUs per job.
 */
import * as path from 'node:path';
import { Worker, type WorkerOptions } from '@temporalio/worker';
import { createActivities } from '../activities';
import { workerEnv } from '../activities/env';
import { gpuPool } from '../activities/gpus';
import { TASK_QUEUES } from '../common/config';
import { nativeConnection, temporalClient } from './connection';

type Role = 'cpu' | 'gpu' | 'all';

/** Concurrent GPU jobs: GPUs per node / GPUs per job; one job at a time on a CPU-only node. */
export function gpuSlots(gpus: number, perJob: number): number {
  if (gpus <= 0) return 1;
  return Math.max(1, Math.floor(gpus / Math.max(1, perJob)));
}

export async function runWorkers(role: Role, opts: { signal?: AbortSignal } = {}): Promise<void> {
  workerEnv();
  const connection = await nativeConnection();
  const client = await temporalClient();
  const activities = createActivities({ client });
  const namespace = workerEnv().TEMPORAL_NAMESPACE;
  const workers: Worker[] = [];
  const base: Pick<WorkerOptions, 'connection' | 'namespace'> = { connection, namespace };
  if (role === 'cpu' || role === 'all') {
    workers.push(
      await Worker.create({ ...base, taskQueue: TASK_QUEUES.workflows, workflowsPath: path.join(__dirname, '..', 'workflows', 'index.ts') }),
      await Worker.create({
        ...base,
        taskQueue: TASK_QUEUES.cpu,
        activities,
        maxConcurrentActivityTaskExecutions: Number(process.env.VALUEDRIFT_CPU_CONCURRENCY ?? 8),
      }),
    );
  }
  if (role === 'gpu' || role === 'all') {
    const slots = gpuSlots(gpuPool().size, Number(process.env.VALUEDRIFT_GPUS_PER_JOB ?? 1));
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
  console.error(`[worker] role ${role} polling ${workers.length} queue(s) on ${workerEnv().TEMPORAL_ADDRESS}`);
  try {
    await Promise.all(workers.map((w) => w.run()));
  } finally {
    await client.connection.close();
    await connection.close();
  }
}

if (require.main === module) {
  const role = (process.env.VALUEDRIFT_WORKER_ROLE ?? 'all') as Role;
  if (!['cpu', 'gpu', 'all'].includes(role)) {
    console.error(`VALUEDRIFT_WORKER_ROLE must be cpu, gpu or all (got "${role}")`);
    process.exit(2);
  }
  runWorkers(role).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
