/**
 * `trainStage`: supervises one training stage of the Python trainer.
 *
 * - spawns `python -m valuedrift_trainer train` (or accelerate for several GPUs) with an argument array;
 * - heartbeats `{step, total, loss, lastUploadedStep}`;
 * - uploads each checkpoint while training goes on (manifest last) and only then announces it to the
 *   stage workflow (a signal; the workflow dedupes by step), and removes the local copy;
 * - on a retry, finds the checkpoints already complete in the store, re-announces them, downloads the
 *   newest and resumes from it with optimizer and scheduler state (the step counter continues);
 * - on cancellation kills the trainer's whole process group.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { activityContext } from './context';
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { type ArtifactRef, type CheckpointAnnouncement, type Checkpoint, type ModelHandle, type TrainerEvent } from '../common/contracts';
import { storeKeys } from '../common/config';
import type { StageSpec } from '../common/spec';
import { parseRows, toJsonl, trainerRows, type PreparedDataset } from './datasets';
import { workerEnv } from './env';
import { localModel } from './models';
import { downloadDir, getBytes, listKeys, MANIFEST_NAME, sha256Hex, uploadDir, uriOf } from './store';
import { killGroup, waitForGroupExit } from './processGroup';
import { runTrainerCommand, type DoneEvent } from './trainerCommand';

export interface TrainStageInput {
  lineage: string;
  stageKey: string;
  stage: StageSpec;
  parent: ModelHandle;
  /** PPO only: the trained reward model. */
  rewardModel?: ModelHandle;
  dataset: PreparedDataset;
  seed: number;
}

export interface TrainStageResult {
  stageId: string;
  totalSteps: number;
  checkpoints: Checkpoint[];
  final: Checkpoint;
  /** Steps this attempt resumed from (0 = fresh start). */
  resumedFrom: number;
}

export const TrainHeartbeat = z.object({
  step: z.number().int(),
  total: z.number().int(),
  loss: z.number().nullable(),
  lastUploadedStep: z.number().int(),
});
export type TrainHeartbeat = z.infer<typeof TrainHeartbeat>;

export type Announce = (a: CheckpointAnnouncement) => Promise<void>;

/**
 * The trainer's config file for a stage: where things are (model, data, output, resume point), the
 * orchestration settings, and `hyperparameters` exactly as the spec holds them (TRL's names; the
 * trainer validates them against specs/lineage.schema.json, which `npm run schema` generates from
 * common/spec.ts).
 */
export function trainerConfig(input: {
  stage: StageSpec;
  model: string;
  rewardModel?: string;
  trainFile: string;
  outputDir: string;
  resumeFrom?: string;
  seed: number;
}): Record<string, unknown> {
  const s = input.stage;
  const config: Record<string, unknown> = {
    stage: s.kind,
    model: input.model,
    train_file: input.trainFile,
    output_dir: input.outputDir,
    checkpoint_every: s.checkpointEvery,
    num_gpus: s.gpus,
    seed: s.seed ?? input.seed,
    bf16: 'auto',
    hyperparameters: s.hyperparameters,
  };
  if (input.resumeFrom) config.resume_from = input.resumeFrom;
  if (s.kind === 'ppo') {
    if (!input.rewardModel) throw ApplicationFailure.nonRetryable('ppo stage without a reward model', 'InvalidLineageSpec');
    config.reward_model = input.rewardModel;
  }
  return config;
}

/** Checkpoints of this stage that are complete in the store (their manifest exists). */
export async function uploadedCheckpoints(lineage: string, stageId: string): Promise<Map<number, ArtifactRef>> {
  const prefix = storeKeys.checkpointsPrefix(lineage, stageId);
  const out = new Map<number, ArtifactRef>();
  for (const key of await listKeys(prefix)) {
    const m = new RegExp(`^${prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}step-(\\d+)/${MANIFEST_NAME}$`).exec(key);
    if (!m) continue;
    const body = await getBytes(uriOf(key));
    out.set(Number(m[1]), { uri: uriOf(key), sha256: sha256Hex(body), bytes: body.length });
  }
  return out;
}

/** Kills the process group recorded in `pidFile` if it is still a trainer. */
export async function killStaleTrainer(pidFile: string): Promise<boolean> {
  let pid: number;
  try {
    pid = Number((await fs.readFile(pidFile, 'utf8')).trim());
  } catch {
    return false;
  }
  if (!Number.isInteger(pid) || pid <= 1) return false;
  try {
    const cmdline = (await fs.readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').join(' ');
    if (!cmdline.includes('valuedrift_trainer')) return false; // the pid was reused by something else
  } catch {
    return false; // gone
  }
  killGroup(pid, 'SIGKILL');
  await waitForGroupExit(pid, 5_000);
  return true;
}


/** Observation points for tests (e.g. kill the trainer right after a given event). */
export interface TrainStageHooks {
  onTrainerEvent?: (e: TrainerEvent, pid: number) => void;
}

export async function trainStage(input: TrainStageInput, announce: Announce, hooks: TrainStageHooks = {}): Promise<TrainStageResult> {
  const env = workerEnv();
  const ctx = activityContext();
  const { lineage, stage } = input;
  const work = path.join(env.workDir, 'train', lineage, stage.id, input.stageKey.slice(0, 16));
  const outputDir = path.join(work, 'out');
  await fs.mkdir(outputDir, { recursive: true });
  // A trainer left behind by a worker that died (it runs in its own process group) must not write
  // into the same folder as the one this attempt starts.
  const pidFile = path.join(work, 'trainer.pid');
  await killStaleTrainer(pidFile);

  // 1. What an earlier attempt already finished: announce it again (idempotent by step) and resume.
  const done = await uploadedCheckpoints(lineage, stage.id);
  const steps = [...done.keys()].sort((a, b) => a - b);
  const resumeStep = steps.length ? (steps[steps.length - 1] as number) : 0;
  const state: TrainHeartbeat = { step: resumeStep, total: 0, loss: null, lastUploadedStep: resumeStep };
  const prior = TrainHeartbeat.safeParse(ctx?.info.heartbeatDetails);
  if (prior.success) state.total = prior.data.total;
  let resumeFrom: string | undefined;
  if (resumeStep > 0) {
    const ref = done.get(resumeStep) as ArtifactRef;
    resumeFrom = path.join(work, 'resume', `checkpoint-${resumeStep}`);
    await downloadDir(ref, resumeFrom);
  }

  // 2. Inputs: the stage's training rows, the starting model, the reward model.
  const rows = trainerRows(
    stage.kind,
    input.dataset.format,
    'alignment' in stage ? stage.alignment : 'as-is',
    parseRows(input.dataset.name, input.dataset.format, (await getBytes(input.dataset.ref.uri)).toString('utf8')),
  );
  const trainFile = path.join(work, 'train.jsonl');
  await fs.writeFile(trainFile, toJsonl(rows));
  const model = await localModel(input.parent);
  const rewardModel = input.rewardModel ? await localModel(input.rewardModel) : undefined;
  const config = trainerConfig({ stage, model, rewardModel, trainFile, outputDir, resumeFrom, seed: input.seed });

  // 3. Run, uploading checkpoints in order as they appear.
  const checkpoints = new Map<number, ArtifactRef>(done);
  let uploads: Promise<void> = Promise.resolve();
  let uploadError: unknown;
  const beat = () => ctx?.heartbeat({ ...state });
  for (const s of steps) {
    await announce({ stageId: stage.id, step: s, totalSteps: state.total, ref: done.get(s) as ArtifactRef, loss: null });
  }

  const onCheckpoint = (step: number, dir: string) => {
    uploads = uploads.then(async () => {
      if (uploadError) return;
      try {
        const { manifest } = await uploadDir(storeKeys.checkpoint(lineage, stage.id, step), dir, { onFile: () => beat() });
        checkpoints.set(step, manifest);
        state.lastUploadedStep = Math.max(state.lastUploadedStep, step);
        beat();
        await announce({ stageId: stage.id, step, totalSteps: state.total, ref: manifest, loss: state.loss });
        // Uploaded and announced: the local copy is no longer needed (keeps disk bounded).
        await fs.rm(dir, { recursive: true, force: true });
        if (resumeFrom) await fs.rm(path.dirname(resumeFrom), { recursive: true, force: true });
      } catch (err) {
        uploadError = err;
      }
    });
  };

  // Lease, spawn (accelerate for several GPUs), heartbeats, cancellation, process-group cleanup and
  // failure classification are the supervisor's; this activity adds the checkpoint uploads.
  const doneEvent: DoneEvent = await runTrainerCommand({
    command: 'train',
    config,
    what: `training stage "${stage.id}"`,
    gpus: stage.gpus,
    distributed: true,
    heartbeat: () => ({ ...state }),
    onEvent: (e, pid) => {
      hooks.onTrainerEvent?.(e, pid);
      if (e.event === 'progress') {
        state.step = e.step;
        state.total = e.total;
        state.loss = e.loss ?? state.loss;
      } else if (e.event === 'checkpoint') {
        onCheckpoint(e.step, e.path);
      }
    },
    // Recorded so that an attempt started after this worker dies can kill a trainer left behind.
    onSpawn: (pid) => fs.writeFile(pidFile, String(pid)),
    afterExit: async () => {
      await uploads;
      if (uploadError) throw uploadError;
    },
  });
  const finalStep = doneEvent.finalStep;
  const finalRef = checkpoints.get(finalStep);
  if (!finalRef) throw ApplicationFailure.retryable(`stage "${stage.id}": final checkpoint ${finalStep} was not uploaded`, 'MissingCheckpoint');
  const totalSteps = Math.max(state.total, finalStep);
  const list: Checkpoint[] = [...checkpoints.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([step, ref]) => ({ stageId: stage.id, step, totalSteps, ref }));
  await fs.rm(work, { recursive: true, force: true });
  return { stageId: stage.id, totalSteps, checkpoints: list, final: { stageId: stage.id, step: finalStep, totalSteps, ref: finalRef }, resumedFrom: resumeStep };
}
