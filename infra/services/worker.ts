/**
 * The stack's workers: `tsx worker/main.ts`, one process per role (`VALUEDRIFT_WORKER_ROLE`), with
 * stack.env's environment. A worker has no port: it is up when Temporal lists a poller of its own
 * process group on its task queue.
 */
import fs from 'node:fs';
import path from 'node:path';

import { z } from 'zod';

import { TASK_QUEUES } from '../../common/config';
import { TSX_BIN } from '../paths';
import { processGroupOf } from '../proc';
import { REPO_ROOT } from '../settings';
import { stackEnvironment } from '../stackEnv';
import { temporalCli } from '../temporalCli';
import { type LocalService, SERVICE, SERVICE_DEFAULTS, type ServiceContext, type ServiceName, childEnv } from './service';
import { temporalTarget } from './temporal';

/** The roles the stack runs, one worker each (worker/main.ts also knows `all`). */
export const STACK_WORKER_ROLES = ['cpu', 'gpu'] as const;
export type StackWorkerRole = (typeof STACK_WORKER_ROLES)[number];

/** A worker bundles the workflow code (webpack) before it polls: ~10 s on 2 busy cores, minutes at load 30 (an exit ends the wait at once). */
const READY_TIMEOUT_MS = 600_000;
export const WORKER_MAIN_FILE = path.join(REPO_ROOT, 'worker', 'main.ts');

/** A queue each role polls, and the kind of task it polls there (see worker/main.ts). */
const PROBE_QUEUE: Record<StackWorkerRole, { queue: string; type: 'workflow' | 'activity' }> = {
  cpu: { queue: TASK_QUEUES.workflows, type: 'workflow' },
  gpu: { queue: TASK_QUEUES.gpu, type: 'activity' },
};

const TaskQueuePollers = z.object({ pollers: z.array(z.object({ identity: z.string().optional() })).optional() });

export function workerName(role: StackWorkerRole): ServiceName {
  return role === 'cpu' ? SERVICE.workerCpu : SERVICE.workerGpu;
}

export function workerService(ctx: ServiceContext, role: StackWorkerRole): LocalService {
  const name = workerName(role);
  const { queue, type } = PROBE_QUEUE[role];
  return {
    ...SERVICE_DEFAULTS,
    name,
    port: null,
    logFile: ctx.data.logFileFor(name),
    launch: {
      cmd: TSX_BIN,
      args: [path.relative(REPO_ROOT, WORKER_MAIN_FILE)],
      env: childEnv({ ...stackEnvironment(ctx.settings, ctx.py, ctx.data.workDir), VALUEDRIFT_WORKER_ROLE: role }),
    },
    readyTimeoutMs: READY_TIMEOUT_MS,
    beforeStart: () => {
      if (!fs.existsSync(WORKER_MAIN_FILE)) throw new Error(`${name}: ${path.relative(REPO_ROOT, WORKER_MAIN_FILE)} does not exist`);
    },
    // Pollers of a worker that died stay listed for a while; the process-group check skips them.
    async healthy() {
      const record = ctx.records.find(name);
      if (record === undefined) return false;
      const res = await temporalCli(
        temporalTarget(ctx),
        ['task-queue', 'describe', '--task-queue', queue, '--legacy-mode', '--task-queue-type-legacy', type, '-o', 'json'],
        15_000,
      );
      if (res.code !== 0) return false;
      let json: unknown;
      try {
        json = JSON.parse(res.stdout);
      } catch {
        return false;
      }
      const pollers = TaskQueuePollers.safeParse(json).data?.pollers ?? [];
      return pollers.some((p) => {
        // The SDK's default identity is `pid@host`.
        const pid = Number(p.identity?.split('@')[0]);
        if (!Number.isInteger(pid) || pid <= 0) return false;
        const group = processGroupOf(pid);
        return group === undefined || group === record.pgid; // no /proc: any live poller will do
      });
    },
  };
}
