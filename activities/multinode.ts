/**
 * Multi-node training (a stage's `nodes` > 1): the worker side of one group.
 *
 * A group is N members started together by the stage workflow (workflows/stage.ts), all given one
 * rendezvous token: the leader is the ordinary `trainStage` activity (machine rank 0; it uploads and
 * announces checkpoints exactly as on one node), the followers are `trainStageFollower` (ranks
 * 1..N−1). Each member runs on its own gpu worker, leases the stage's `gpus` there and launches
 * accelerate with the group's machine settings; torch's static rendezvous connects them to rank 0.
 *
 * What they share is a folder every node mounts at the same path (VALUEDRIFT_SHARED_DIR): the
 * leader writes the trainer's output (checkpoints, which every rank writes into), the training rows
 * and the resume state there, and publishes `{addr, port, config}` under the token
 * (`rendezvousFile`); a follower waits for that record (heartbeating, bounded by
 * VALUEDRIFT_RENDEZVOUS_TIMEOUT_SECONDS), takes the trainer config from it with its own copy of the
 * starting model, and launches. Only workers with a shared dir poll the multi-node queues
 * (worker/main.ts).
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { storeKeys } from '../common/config';
import type { ModelHandle } from '../common/contracts';
import type { StageSpec } from '../common/spec';
import { activityContext } from './context';
import { workerEnv, type WorkerEnv } from './env';
import { localModel } from './models';
import { putFile } from './store';
import { runTrainerCommand } from './trainerCommand';

export interface MultiNodeSettings {
  /** The folder every node of a group mounts at the same path; unset: this worker takes no multi-node work. */
  sharedDir: string | undefined;
  /** Where the other nodes reach this one (default: its hostname). */
  nodeAddr: string;
  rendezvousTimeoutMs: number;
}

/** The worker's multi-node settings (activities/env.ts: VALUEDRIFT_SHARED_DIR, VALUEDRIFT_NODE_ADDR, VALUEDRIFT_RENDEZVOUS_TIMEOUT_SECONDS). */
export function multiNodeSettings(
  env: Pick<WorkerEnv, 'VALUEDRIFT_SHARED_DIR' | 'VALUEDRIFT_NODE_ADDR' | 'VALUEDRIFT_RENDEZVOUS_TIMEOUT_SECONDS'> = workerEnv(),
): MultiNodeSettings {
  return {
    sharedDir: env.VALUEDRIFT_SHARED_DIR,
    nodeAddr: env.VALUEDRIFT_NODE_ADDR ?? os.hostname(),
    rendezvousTimeoutMs: env.VALUEDRIFT_RENDEZVOUS_TIMEOUT_SECONDS * 1000,
  };
}

/** The shared dir, or a retryable failure (a worker set up without one should not have taken the job). */
export function requireSharedDir(what: string, settings: MultiNodeSettings = multiNodeSettings()): string {
  if (settings.sharedDir) return settings.sharedDir;
  throw ApplicationFailure.retryable(`${what}: multi-node training needs VALUEDRIFT_SHARED_DIR on this worker (a folder every node mounts at the same path)`, 'NoSharedDir');
}

/** One group attempt's place in a stage's multi-node training (the leader's `trainStage` input). */
export interface GroupMember {
  /** Made by the workflow per group attempt (uuid4): names the rendezvous record. */
  token: string;
  nodes: number;
}

/** Where a group's leader works: the same path on every node (the trainer's output_dir lies under it). */
export function sharedWorkDir(sharedDir: string, lineage: string, stageId: string, stageKey: string): string {
  return path.join(sharedDir, 'valuedrift', 'train', lineage, stageId, stageKey.slice(0, 16));
}

const TOKEN = /^[0-9a-f-]{8,64}$/i;

export function rendezvousFile(sharedDir: string, token: string): string {
  if (!TOKEN.test(token)) throw ApplicationFailure.nonRetryable(`invalid rendezvous token ${JSON.stringify(token)}`, 'InvalidRendezvousToken');
  return path.join(sharedDir, 'valuedrift', 'rendezvous', `${token}.json`);
}

/** What the leader publishes under the token. */
export const Rendezvous = z.object({
  token: z.string(),
  nodes: z.number().int().min(2),
  /** The leader's reachable address and the port its rank 0 listens on. */
  addr: z.string().min(1),
  port: z.number().int().min(1).max(65_535),
  /** The leader's training attempt (numbers the followers' logs beside its own). */
  attempt: z.number().int().positive(),
  /** The trainer config; every path in it is under the shared dir except the models, which each node loads itself. */
  config: z.record(z.string(), z.unknown()),
});
export type Rendezvous = z.infer<typeof Rendezvous>;

/** Publishes the record (written aside, then renamed: a follower never reads half of it). */
export async function publishRendezvous(sharedDir: string, r: Rendezvous): Promise<string> {
  const file = rendezvousFile(sharedDir, r.token);
  await fs.mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, JSON.stringify(Rendezvous.parse(r)));
  await fs.rename(tmp, file);
  return file;
}

/**
 * Waits for the leader's record under `token`, polling every `pollMs` and calling `whileWaiting`
 * (heartbeats); fails retryably after `timeoutMs` (the workflow then runs the whole group again).
 */
export async function awaitRendezvous(
  sharedDir: string,
  token: string,
  opts: { timeoutMs: number; pollMs?: number; signal?: AbortSignal; whileWaiting?: () => void },
): Promise<Rendezvous> {
  const file = rendezvousFile(sharedDir, token);
  const until = Date.now() + opts.timeoutMs;
  for (;;) {
    opts.signal?.throwIfAborted();
    try {
      const parsed = Rendezvous.safeParse(JSON.parse(await fs.readFile(file, 'utf8')));
      if (!parsed.success) throw ApplicationFailure.nonRetryable(`rendezvous record ${file} is malformed: ${parsed.error.message}`, 'InvalidRendezvous');
      return parsed.data;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (Date.now() >= until) {
      throw ApplicationFailure.retryable(
        `no rendezvous from the group's leader within ${Math.round(opts.timeoutMs / 1000)} s (VALUEDRIFT_RENDEZVOUS_TIMEOUT_SECONDS); expected ${file}`,
        'RendezvousTimeout',
      );
    }
    opts.whileWaiting?.();
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 1_000));
  }
}

export interface TrainStageFollowerInput {
  lineage: string;
  stageKey: string;
  stage: StageSpec;
  parent: ModelHandle;
  rewardModel?: ModelHandle;
  token: string;
  nodes: number;
  /** 1..nodes − 1 */
  rank: number;
}

export interface TrainStageFollowerResult {
  rank: number;
  /** The worker's address, for the history. */
  node: string;
}

/**
 * One follower of a multi-node group: its own copy of the starting model, the leader's config and
 * address from the rendezvous, accelerate at machine rank `rank`. Rank 0 reports progress and
 * checkpoints; a follower heartbeats while it waits and runs, and succeeds when its processes exit 0.
 * Its trainer output is stored beside the leader's attempt log (`attempt-<n>-rank-<k>.log`).
 */
export async function trainStageFollower(input: TrainStageFollowerInput): Promise<TrainStageFollowerResult> {
  const { lineage, stage } = input;
  const what = `training stage "${stage.id}" (node rank ${input.rank} of ${input.nodes})`;
  if (!Number.isInteger(input.rank) || input.rank < 1 || input.rank >= input.nodes) {
    throw ApplicationFailure.nonRetryable(`${what}: rank must be 1..${input.nodes - 1}`, 'InvalidGroupRank');
  }
  const settings = multiNodeSettings();
  const shared = requireSharedDir(what, settings);
  const ctx = activityContext();
  const signal = ctx?.cancellationSignal;
  const local = path.join(workerEnv().workDir, 'train-follower', lineage, stage.id, `${input.stageKey.slice(0, 16)}-rank-${input.rank}`);
  await fs.mkdir(local, { recursive: true });
  const models = [await localModel(input.parent), ...(input.rewardModel ? [await localModel(input.rewardModel)] : [])];
  let logFile: string | undefined;
  let attempt: number | undefined;
  try {
    const rdv = await awaitRendezvous(shared, input.token, {
      timeoutMs: settings.rendezvousTimeoutMs,
      signal,
      whileWaiting: () => ctx?.heartbeat({ rank: input.rank, waiting: 'rendezvous' }),
    });
    if (rdv.nodes !== input.nodes) throw ApplicationFailure.nonRetryable(`${what}: the leader's record is for ${rdv.nodes} nodes`, 'InvalidRendezvous');
    attempt = rdv.attempt;
    logFile = path.join(local, `attempt-${attempt}-rank-${input.rank}.log`);
    const config: Record<string, unknown> = { ...rdv.config, model: models[0]?.path };
    if (models[1]) config.reward_model = models[1].path;
    await runTrainerCommand({
      command: 'train',
      config,
      what,
      gpus: stage.gpus,
      distributed: true,
      machine: { nodes: input.nodes, rank: input.rank, addr: rdv.addr, port: rdv.port },
      follower: true,
      logFile,
      heartbeat: () => ({ rank: input.rank, leader: `${rdv.addr}:${rdv.port}` }),
    });
    return { rank: input.rank, node: settings.nodeAddr };
  } finally {
    await Promise.all(models.map((m) => m.release()));
    if (logFile && attempt !== undefined) {
      try {
        await putFile(`${storeKeys.trainerLogsPrefix(lineage, stage.id)}attempt-${attempt}-rank-${input.rank}.log`, logFile, 'text/plain; charset=utf-8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') console.warn(`${what}: log not saved: ${String(err)}`);
      }
    }
    await fs.rm(local, { recursive: true, force: true });
  }
}
