/**
 * A multi-node group's life in the workflow (workflows/stage.ts `trainGroup`) on a real Temporal dev
 * server, with stand-in members on the multi-node queue: all members get one token per group attempt
 * and their ranks; when a member fails the others are cancelled, and the next attempt (a new token)
 * starts only once they have stopped; a non-retryable failure ends the group at once; attempts are
 * bounded. The real members (trainer on two worker processes) are test/multinode/multinode.slow.ts.
 */
import * as path from 'node:path';
import { Context } from '@temporalio/activity';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TrainStageFollowerInput } from '../../activities/multinode';
import type { TrainStageInput, TrainStageResult } from '../../activities/training';
import { gpuMultiNodeTaskQueue, TASK_QUEUES } from '../../common/config';
import { StageSpec } from '../../common/spec';
import { quietBundle, startTestServer, uniqueName } from '../support/workflowEnv';
import { groupTraining } from './workflows';

let env: TestWorkflowEnvironment;
let bundle: WorkflowBundleWithSourceMap;

beforeAll(async () => {
  env = await startTestServer();
  bundle = await quietBundle(path.join(__dirname, 'workflows.ts'));
}, 120_000);
afterAll(async () => {
  await env?.teardown();
});

interface Run {
  token: string;
  rank: number;
  start: number;
  end: number;
  outcome: 'ok' | 'failed' | 'cancelled';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Holds (heartbeating) until `ms` passed or the activity is cancelled. */
async function hold(ms: number): Promise<boolean> {
  const ctx = Context.current();
  const until = Date.now() + ms;
  while (Date.now() < until) {
    ctx.heartbeat();
    if (ctx.cancellationSignal.aborted) return false;
    await sleep(20);
  }
  return true;
}

/**
 * Runs the group workflow against stand-in members: `fail(attempt, rank)` says how a member of the
 * n-th group attempt (counted by distinct tokens) ends: undefined = holds 300 ms and succeeds.
 */
async function runGroup(nodes: number, maximumAttempts: number, fail: (attempt: number, rank: number) => ApplicationFailure | undefined) {
  const runs: Run[] = [];
  const tokens: string[] = [];
  const member = async (token: string, rank: number): Promise<boolean> => {
    if (!tokens.includes(token)) tokens.push(token);
    const attempt = tokens.indexOf(token) + 1;
    const run: Run = { token, rank, start: Date.now(), end: 0, outcome: 'ok' };
    runs.push(run);
    const failure = fail(attempt, rank);
    try {
      if (failure) {
        await sleep(100);
        run.outcome = 'failed';
        throw failure;
      }
      // A member of a group that fails is held until it is cancelled.
      const groupFails = Array.from({ length: nodes }, (_, k) => fail(attempt, k)).some((f) => f !== undefined);
      const held = await hold(groupFails ? 30_000 : 300);
      if (!held) {
        run.outcome = 'cancelled';
        Context.current().cancellationSignal.throwIfAborted();
      }
      return true;
    } finally {
      run.end = Date.now();
    }
  };
  const stage = StageSpec.parse({ id: 'sft', parent: 'base', kind: 'sft', dataset: 'd', checkpointEvery: 1, gpus: 1, nodes });
  const result: TrainStageResult = { stageId: 'sft', totalSteps: 1, checkpoints: [], final: { stageId: 'sft', step: 1, totalSteps: 1, ref: { uri: 's3://b/m/manifest.json', sha256: 'x', bytes: 1 } }, resumedFrom: 0 };
  const activities = {
    trainStage: async (i: TrainStageInput) => {
      expect(i.group?.nodes).toBe(nodes);
      await member(i.group?.token ?? '', 0);
      return result;
    },
    trainStageFollower: async (i: TrainStageFollowerInput) => {
      expect(i.nodes).toBe(nodes);
      await member(i.token, i.rank);
      return { rank: i.rank, node: 'stand-in' };
    },
  };
  const common = { connection: env.nativeConnection, namespace: env.namespace ?? 'default' };
  const workers = [
    await Worker.create({ ...common, taskQueue: TASK_QUEUES.workflows, workflowBundle: bundle }),
    await Worker.create({ ...common, taskQueue: gpuMultiNodeTaskQueue(1), activities, maxConcurrentActivityTaskExecutions: 8, maxHeartbeatThrottleInterval: '50ms', defaultHeartbeatThrottleInterval: '50ms' }),
  ];
  const running = workers.map((w) => w.run());
  try {
    const input = { lineage: 'l', stageKey: 'k'.repeat(64), stage, parent: { uri: 'tiny:x', contentKey: 'x' }, dataset: {} as TrainStageInput['dataset'], seed: 1 };
    const outcome = await env.client.workflow
      .execute(groupTraining, { taskQueue: TASK_QUEUES.workflows, workflowId: uniqueName('group'), args: [input, maximumAttempts] })
      .then(
        (value) => ({ value, error: undefined }),
        (error: unknown) => ({ value: undefined, error }),
      );
    return { ...outcome, runs, tokens };
  } finally {
    workers.forEach((w) => w.shutdown());
    await Promise.all(running);
  }
}

const chain = (e: unknown): string => {
  const out: string[] = [];
  for (let x: unknown = e; x instanceof Error; x = x.cause) out.push(x.message);
  return out.join(' | ');
};

describe('a multi-node group in the workflow', () => {
  it('runs again with a new token when a member fails, after the others have been cancelled and stopped', async () => {
    const r = await runGroup(3, 3, (attempt, rank) => (attempt === 1 && rank === 2 ? ApplicationFailure.retryable('follower lost its peer', 'TrainerFailed') : undefined));
    expect(r.error).toBeUndefined();
    expect(r.value?.stageId).toBe('sft');
    expect(r.tokens).toHaveLength(2);
    const [first, second] = r.tokens.map((t) => r.runs.filter((x) => x.token === t));
    // Every member of an attempt had the attempt's token and its own rank.
    expect(first!.map((x) => x.rank).sort()).toEqual([0, 1, 2]);
    expect(second!.map((x) => x.rank).sort()).toEqual([0, 1, 2]);
    expect(first!.map((x) => x.outcome).sort()).toEqual(['cancelled', 'cancelled', 'failed']);
    expect(second!.every((x) => x.outcome === 'ok')).toBe(true);
    // The second group started only after every member of the first had stopped.
    expect(Math.min(...second!.map((x) => x.start))).toBeGreaterThanOrEqual(Math.max(...first!.map((x) => x.end)));
  }, 60_000);

  it('ends at a non-retryable failure, and after its attempts', async () => {
    const fatal = await runGroup(2, 5, (_attempt, rank) => (rank === 0 ? ApplicationFailure.nonRetryable('bad_config: no', 'Trainer_bad_config') : undefined));
    expect(fatal.error).toBeInstanceOf(WorkflowFailedError);
    expect(chain(fatal.error)).toContain('bad_config: no');
    expect(fatal.tokens).toHaveLength(1);
    expect(fatal.runs.find((x) => x.rank === 1)?.outcome).toBe('cancelled');

    const bounded = await runGroup(2, 2, (_attempt, rank) => (rank === 1 ? ApplicationFailure.retryable('flaky network', 'TrainerFailed') : undefined));
    expect(bounded.error).toBeInstanceOf(WorkflowFailedError);
    expect(chain(bounded.error)).toContain('flaky network');
    expect(bounded.tokens).toHaveLength(2);
  }, 60_000);
});
