/**
 * `trainStage`: supervises one training stage of the Python trainer.
 *
 * - spawns `python -m valuedrift_trainer train` (or accelerate for several GPUs) with an argument array;
 * - heartbeats `{step, total, loss, lastUploadedStep}`;
 * - uploads each checkpoint while training goes on (manifest last) and only then announces it to the
 *   stage workflow (a signal; the workflow dedupes by step), and removes the local copy;
 * - on a retry, finds the checkpoints already complete in the store, re-announces them, downloads the
 *   newest resume state and resumes from it with optimizer and scheduler state (the step counter continues);
 * - bounds storage (the stage's `retention`): what is announced and kept of every checkpoint is its
 *   evaluation copy (`step-N/manifest.json`: weights as bf16 safetensors by default, config, tokenizer;
 *   the trainer writes it as `evaluation-N`); the trainer's whole checkpoint (full-precision weights,
 *   optimizer, scheduler, RNG, trainer state) goes to `step-N/resume/` and, with `optimizerState:
 *   "newest"` (the default), the resume state of every older step is deleted once step N's is
 *   complete (never before: a retry resumes from the newest complete resume state);
 * - on cancellation kills the trainer's whole process group;
 * - kills a trainer that prints no event for VALUEDRIFT_TRAINER_STALL_SECONDS (a hung trainer would
 *   otherwise hold its GPUs while the heartbeat timer keeps the activity alive): `TrainerStalled`;
 * - stops the trainer at once when a checkpoint cannot be uploaded or announced (`CheckpointUploadFailed`,
 *   `CheckpointAnnounceFailed`, retryable): training on would only make checkpoints that are never
 *   uploaded, and the retry resumes from the last uploaded one;
 * - fences attempts: a checkpoint's files go under `step-N/attempt-<n>/` and its manifest is published
 *   at `step-N/manifest.json` only if none is there (a conditional write), so an attempt cut off from
 *   Temporal that goes on uploading can neither overwrite the files of the retry's checkpoint nor
 *   replace its manifest (RELIABILITY.md);
 * - keeps each attempt's training curves and output: the trainer writes TensorBoard event files (and
 *   scalars.jsonl) into `out/tensorboard/attempt-<n>` and its stdout/stderr go to a local log file;
 *   both are copied to `storeKeys.tensorboard` / `storeKeys.trainerLog` of attempt n at every
 *   checkpoint and when the trainer has exited, whether it succeeded or not. n counts this stage's
 *   attempts in the store (1 + the highest there), so an attempt never writes over another's files.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { activityContext } from './context';
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { type ArtifactRef, type CheckpointAnnouncement, type Checkpoint, type ModelHandle, type TrainerEvent } from '../common/contracts';
import { storeKeys } from '../common/config';
import type { StageSpec } from '../common/spec';
import { writeTrainerFile, type PreparedDataset } from './datasets';
import { scrubSecrets, workerEnv } from './env';
import { localModel } from './models';
import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import { bucket, downloadDir, getBytes, listKeys, Manifest, MANIFEST_NAME, putBytes, putFile, s3, sha256Hex, uploadDir, uriOf } from './store';
import { killGroup, waitForGroupExit } from './processGroup';
import { runTrainerCommand, type DoneEvent } from './trainerCommand';
import { freePort } from './net';
import { multiNodeSettings, publishRendezvous, requireSharedDir, sharedWorkDir, type GroupMember } from './multinode';
import type { MachineRank } from './gpus';

export interface TrainStageInput {
  lineage: string;
  stageKey: string;
  stage: StageSpec;
  parent: ModelHandle;
  /** PPO only: the trained reward model. */
  rewardModel?: ModelHandle;
  dataset: PreparedDataset;
  seed: number;
  /**
   * Multi-node (the stage's `nodes` > 1): this activity is the group's leader, machine rank 0. Its
   * trainer output, training rows and resume state go under VALUEDRIFT_SHARED_DIR, and it publishes
   * the rendezvous for the followers under `token` (activities/multinode.ts).
   */
  group?: GroupMember;
}

export interface TrainStageResult {
  stageId: string;
  totalSteps: number;
  checkpoints: Checkpoint[];
  final: Checkpoint;
  /** Steps this attempt resumed from (0 = fresh start). */
  resumedFrom: number;
}

const LOG_TYPE = 'text/plain; charset=utf-8';

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
  /** Where the trainer writes this attempt's TensorBoard event files (default: under outputDir). */
  tensorboardDir?: string;
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
    weights_dtype: retentionOf(s).weightsDtype,
    hyperparameters: s.hyperparameters,
    report_to: s.reportTo ?? [],
    parallelism: s.parallelism ?? 'ddp',
  };
  if (input.tensorboardDir) config.tensorboard_dir = input.tensorboardDir;
  if (input.resumeFrom) config.resume_from = input.resumeFrom;
  // LoRA settings as the spec holds them (the trainer validates them against `$defs.LoraSettings`).
  if (s.lora) config.lora = s.lora;
  if (s.kind === 'ppo') {
    if (!input.rewardModel) throw ApplicationFailure.nonRetryable('ppo stage without a reward model', 'InvalidLineageSpec');
    config.reward_model = input.rewardModel;
  }
  return config;
}

/** The stage's retention with its defaults (common/spec.ts `Retention`). */
export function retentionOf(stage: StageSpec): { optimizerState: 'newest' | 'all'; weightsDtype: 'bf16' | 'fp32' } {
  return { optimizerState: stage.retention?.optimizerState ?? 'newest', weightsDtype: stage.retention?.weightsDtype ?? 'bf16' };
}

/** Where checkpoint N's resume state lives: the trainer's whole checkpoint folder, under its own manifest. */
export function resumeStateKey(lineage: string, stageId: string, step: number): string {
  return `${storeKeys.checkpoint(lineage, stageId, step)}/resume`;
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Checkpoints of this stage that a retry can resume from: those whose resume state is complete in the
 * store (`step-N/resume/manifest.json`), and those stored before resume state had its own folder
 * (their one manifest lists trainer_state.json).
 */
export async function resumableCheckpoints(lineage: string, stageId: string, evaluated?: Map<number, ArtifactRef>): Promise<Map<number, ArtifactRef>> {
  const prefix = storeKeys.checkpointsPrefix(lineage, stageId);
  const out = new Map<number, ArtifactRef>();
  const re = new RegExp(`^${escapeRe(prefix)}step-(\\d+)/resume/${escapeRe(MANIFEST_NAME)}$`);
  for (const key of await listKeys(prefix)) {
    const m = re.exec(key);
    if (!m) continue;
    const body = await getBytes(uriOf(key));
    out.set(Number(m[1]), { uri: uriOf(key), sha256: sha256Hex(body), bytes: body.length });
  }
  for (const [step, ref] of evaluated ?? []) {
    if (out.has(step)) continue;
    const legacy = Manifest.safeParse(JSON.parse((await getBytes(ref.uri)).toString('utf8')));
    if (legacy.success && legacy.data.files.some((f) => f.path === 'trainer_state.json')) out.set(step, ref);
  }
  return out;
}

/**
 * Deletes the resume state (optimizer, scheduler, full-precision weights) of every checkpoint of the
 * stage before `newest`, whose own resume state must already be complete in the store. Each folder's
 * manifest goes first, so a folder half deleted is never taken for complete. Idempotent (deleting
 * what is gone is a no-op); evaluation copies are never touched. Returns the steps it pruned.
 */
export async function pruneResumeState(lineage: string, stageId: string, newest: number): Promise<number[]> {
  const prefix = storeKeys.checkpointsPrefix(lineage, stageId);
  const re = new RegExp(`^${escapeRe(prefix)}step-(\\d+)/resume/`);
  const byStep = new Map<number, string[]>();
  for (const key of await listKeys(prefix)) {
    const m = re.exec(key);
    if (!m || Number(m[1]) >= newest) continue;
    const keys = byStep.get(Number(m[1])) ?? [];
    keys.push(key);
    byStep.set(Number(m[1]), keys);
  }
  const del = (Key: string) => s3().send(new DeleteObjectCommand({ Bucket: bucket(), Key }));
  for (const keys of byStep.values()) {
    const manifest = keys.filter((k) => k.endsWith(`/resume/${MANIFEST_NAME}`));
    for (const k of manifest) await del(k);
    for (const k of keys) if (!manifest.includes(k)) await del(k);
  }
  return [...byStep.keys()].sort((a, b) => a - b);
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

/** The attempt number this run of a stage takes: one more than any attempt with files in the store. */
export async function nextAttempt(lineage: string, stageId: string): Promise<number> {
  let highest = 0;
  for (const prefix of [storeKeys.tensorboardPrefix(lineage, stageId), storeKeys.trainerLogsPrefix(lineage, stageId)]) {
    for (const key of await listKeys(prefix)) {
      const m = /^attempt-(\d+)(?:\.log$|\/)/.exec(key.slice(prefix.length));
      if (m) highest = Math.max(highest, Number(m[1]));
    }
  }
  return highest + 1;
}

/** Environment the trainer needs for the stage's `reportTo` integrations (their own settings, credentials included). */
export function integrationEnv(stage: StageSpec, from: NodeJS.ProcessEnv = { ...process.env }): Record<string, string> {
  const prefixes = (stage.reportTo ?? []).flatMap((x) => (x === 'wandb' ? ['WANDB_'] : x === 'mlflow' ? ['MLFLOW_'] : []));
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(from)) if (value !== undefined && prefixes.some((p) => name.startsWith(p))) env[name] = value;
  return env;
}

/**
 * Uploads a copy of `file` taken now (the trainer may still be appending to it, and an object's
 * recorded sha256 must match its bytes). Nothing when the file does not exist (yet).
 */
async function putSnapshot(key: string, file: string, contentType: string): Promise<void> {
  const copy = `${file}.upload`;
  try {
    await fs.copyFile(file, copy);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  try {
    await putFile(key, copy, contentType);
  } finally {
    await fs.rm(copy, { force: true });
  }
}

/** Copies every file under `dir` to `prefix/<relative path>` (a snapshot of each). */
async function putTree(prefix: string, dir: string): Promise<void> {
  const entries: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await fs.readdir(d, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(path.join(d, e.name));
      else if (e.isFile() && !e.name.endsWith('.upload')) entries.push(path.relative(dir, path.join(d, e.name)));
    }
  };
  try {
    await walk(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  for (const rel of entries.sort()) {
    const type = rel.endsWith('.jsonl') ? 'application/x-ndjson' : 'application/octet-stream';
    await putSnapshot(`${prefix}/${rel.split(path.sep).join('/')}`, path.join(dir, rel), type);
  }
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


/** A checkpoint that could not be uploaded or announced: retryable, naming the cause and where a retry resumes. */
export type CheckpointStep = 'upload' | 'announce' | 'tidy up after';
const CHECKPOINT_FAILURE: Record<CheckpointStep, string> = {
  upload: 'CheckpointUploadFailed',
  announce: 'CheckpointAnnounceFailed',
  // Saving the log and curves beside it, removing the local copy.
  'tidy up after': 'CheckpointUploadFailed',
};
export function checkpointFailure(stageId: string, step: number, doing: CheckpointStep, lastUploadedStep: number, err: unknown): ApplicationFailure {
  const cause = scrubSecrets(err instanceof Error ? `${err.name}: ${err.message}` : String(err));
  const type = CHECKPOINT_FAILURE[doing];
  return ApplicationFailure.retryable(
    `training stage "${stageId}": could not ${doing} checkpoint ${step}: ${cause}; the trainer was stopped, a retry resumes from step ${lastUploadedStep}`,
    type,
  );
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
  // A group's leader: what every node's trainer reads or writes lies on the shared mount (the pid
  // file and the log stay on this node).
  const group = input.group;
  const multi = group ? multiNodeSettings() : undefined;
  const data = group ? sharedWorkDir(requireSharedDir(`training stage "${stage.id}"`, multi), lineage, stage.id, input.stageKey) : work;
  const outputDir = path.join(data, 'out');
  await fs.mkdir(work, { recursive: true });
  await fs.mkdir(outputDir, { recursive: true });
  // A trainer left behind by a worker that died (it runs in its own process group) must not write
  // into the same folder as the one this attempt starts.
  const pidFile = path.join(work, 'trainer.pid');
  await killStaleTrainer(pidFile);

  // 1. What an earlier attempt already finished: announce it again (idempotent by step) and resume.
  const retention = retentionOf(stage);
  const done = await uploadedCheckpoints(lineage, stage.id);
  const steps = [...done.keys()].sort((a, b) => a - b);
  const resumable = await resumableCheckpoints(lineage, stage.id, done);
  const resumeStep = Math.max(0, ...resumable.keys());
  // An attempt that died between publishing a resume state and pruning the older ones.
  if (retention.optimizerState === 'newest' && resumeStep > 0) await pruneResumeState(lineage, stage.id, resumeStep);
  const state: TrainHeartbeat = { step: resumeStep, total: 0, loss: null, lastUploadedStep: resumeStep };
  const prior = TrainHeartbeat.safeParse(ctx?.info.heartbeatDetails);
  if (prior.success) state.total = prior.data.total;
  let resumeFrom: string | undefined;
  if (resumeStep > 0) {
    const ref = resumable.get(resumeStep) as ArtifactRef;
    resumeFrom = path.join(data, 'resume', `checkpoint-${resumeStep}`);
    await downloadDir(ref, resumeFrom);
  }

  // 2. Inputs: the stage's training rows, the starting model, the reward model.
  // Row by row (download, check, shape, write): no whole-dataset string in the worker.
  const trainFile = path.join(data, 'train.jsonl');
  await writeTrainerFile(input.dataset, stage.kind, 'alignment' in stage ? stage.alignment : 'as-is', trainFile);
  // Held in the worker's model cache (not evicted) until the trainer has exited.
  const models = [await localModel(input.parent), ...(input.rewardModel ? [await localModel(input.rewardModel)] : [])];
  const [model, rewardModel] = models.map((m) => m.path) as [string, string | undefined];
  // This attempt's curves and log: local files, copied to the store under its own attempt number
  // (claimed at once with a first version of the log, so a later attempt counts past it).
  const attempt = await nextAttempt(lineage, stage.id);
  const tensorboardDir = path.join(outputDir, 'tensorboard', `attempt-${attempt}`);
  const logFile = path.join(work, 'logs', `attempt-${attempt}.log`);
  await fs.rm(tensorboardDir, { recursive: true, force: true });
  await fs.mkdir(path.dirname(logFile), { recursive: true });
  const logKey = storeKeys.trainerLog(lineage, stage.id, attempt);
  await putBytes(logKey, `# attempt ${attempt} of stage "${stage.id}" started (activity attempt ${ctx?.info.attempt ?? 1}); the full log follows at each checkpoint and at the end\n`, LOG_TYPE);
  const saveAttempt = async () => {
    await putTree(storeKeys.tensorboard(lineage, stage.id, attempt), tensorboardDir);
    await putSnapshot(logKey, logFile, LOG_TYPE);
  };
  const config = trainerConfig({ stage, model, rewardModel, trainFile, outputDir, tensorboardDir, resumeFrom, seed: input.seed });
  // The leader's rank 0 listens on a port of this node; the followers find it under the token.
  let machine: MachineRank | undefined;
  let rendezvous: string | undefined;
  if (group && multi) {
    machine = { nodes: group.nodes, rank: 0, addr: multi.nodeAddr, port: await freePort('0.0.0.0') };
    rendezvous = await publishRendezvous(requireSharedDir(`training stage "${stage.id}"`, multi), {
      token: group.token,
      nodes: group.nodes,
      addr: machine.addr,
      port: machine.port,
      attempt,
      config,
    });
  }

  // 3. Run, uploading checkpoints in order as they appear.
  const checkpoints = new Map<number, ArtifactRef>(done);
  let uploads: Promise<void> = Promise.resolve();
  let uploadError: ApplicationFailure | undefined;
  // Aborted on an upload or announcement failure: the supervisor kills the trainer at once.
  const stop = new AbortController();
  const beat = () => ctx?.heartbeat({ ...state });
  for (const s of steps) {
    await announce({ stageId: stage.id, step: s, totalSteps: state.total, ref: done.get(s) as ArtifactRef, loss: null });
  }

  const onCheckpoint = (step: number, dir: string) => {
    uploads = uploads.then(async () => {
      if (uploadError) return;
      let doing: CheckpointStep = 'upload';
      try {
        // The trainer writes the evaluation copy (retention dtype, no resume state) beside the
        // checkpoint before announcing it: `evaluation-N` for `checkpoint-N`.
        const evalDir = path.join(path.dirname(dir), `evaluation-${step}`);
        // This attempt's own folder for the files; the manifest is published only if no other
        // attempt has published this step (then that one is the checkpoint, and is what is announced).
        const { manifest } = await uploadDir(storeKeys.checkpoint(lineage, stage.id, step), evalDir, { attempt: `attempt-${attempt}`, onFile: () => beat() });
        checkpoints.set(step, manifest);
        // Then what a retry resumes from (published the same way), before the announcement: an
        // announced checkpoint can always be resumed from. Only once it is complete are the older
        // steps' resume states deleted.
        await uploadDir(resumeStateKey(lineage, stage.id, step), dir, { attempt: `attempt-${attempt}`, onFile: () => beat() });
        state.lastUploadedStep = Math.max(state.lastUploadedStep, step);
        beat();
        doing = 'announce';
        await announce({ stageId: stage.id, step, totalSteps: state.total, ref: manifest, loss: state.loss });
        doing = 'tidy up after';
        if (retention.optimizerState === 'newest') await pruneResumeState(lineage, stage.id, step);
        // Uploaded and announced: the local copies are no longer needed (keeps disk bounded).
        await fs.rm(dir, { recursive: true, force: true });
        await fs.rm(evalDir, { recursive: true, force: true });
        // The curves and the log so far, beside the checkpoint.
        await saveAttempt();
        if (resumeFrom) await fs.rm(path.dirname(resumeFrom), { recursive: true, force: true });
      } catch (err) {
        // Stop the trainer now; the retry resumes from the last checkpoint uploaded (and announces
        // again whatever was uploaded but not announced).
        uploadError = checkpointFailure(stage.id, step, doing, state.lastUploadedStep, err);
        stop.abort(uploadError);
      }
    });
  };

  // Lease, spawn (accelerate for several GPUs), heartbeats, cancellation, process-group cleanup and
  // failure classification are the supervisor's; this activity adds the checkpoint uploads.
  let doneEvent: DoneEvent;
  try {
    doneEvent = await runTrainerCommand({
      command: 'train',
      config,
      what: `training stage "${stage.id}"`,
      gpus: stage.gpus,
      distributed: true,
      machine,
      logFile,
      env: integrationEnv(stage),
      heartbeat: () => ({ ...state }),
      stall: { ms: env.VALUEDRIFT_TRAINER_STALL_SECONDS * 1000, setting: `VALUEDRIFT_TRAINER_STALL_SECONDS=${env.VALUEDRIFT_TRAINER_STALL_SECONDS}` },
      stop: stop.signal,
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
  } catch (err) {
    // A failed, killed or cancelled attempt keeps its log and curves too (best effort: the
    // attempt's own failure is what the retry policy must see).
    await uploads;
    try {
      await saveAttempt();
      await fs.rm(tensorboardDir, { recursive: true, force: true });
      await fs.rm(logFile, { force: true });
    } catch (saveErr) {
      console.warn(`stage "${stage.id}" attempt ${attempt}: log and curves not saved: ${String(saveErr)}`);
    }
    throw err;
  } finally {
    await Promise.all(models.map((m) => m.release()));
    if (rendezvous) await fs.rm(rendezvous, { force: true });
  }
  await saveAttempt();
  const finalStep = doneEvent.finalStep;
  const finalRef = checkpoints.get(finalStep);
  if (!finalRef) throw ApplicationFailure.retryable(`stage "${stage.id}": final checkpoint ${finalStep} was not uploaded`, 'MissingCheckpoint');
  const totalSteps = Math.max(state.total, finalStep);
  const list: Checkpoint[] = [...checkpoints.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([step, ref]) => ({ stageId: stage.id, step, totalSteps, ref }));
  await fs.rm(work, { recursive: true, force: true });
  if (data !== work) await fs.rm(data, { recursive: true, force: true });
  return { stageId: stage.id, totalSteps, checkpoints: list, final: { stageId: stage.id, step: finalStep, totalSteps, ref: finalRef }, resumedFrom: resumeStep };
}
