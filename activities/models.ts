/** Local copies of models from the store, shared by training and generation on one worker. */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { type ModelHandle, TrainerEvent } from '../common/contracts';
import { activityContext } from './context';
import { childProcessEnv, REPO_ROOT, scrubSecrets, workerEnv } from './env';
import { acquireLease, evictLeastRecentlyUsed, touchEntry } from './modelCache';
import { downloadDir, getBytesIfExists, MANIFEST_NAME, sha256Hex } from './store';

const execFileAsync = promisify(execFile);

/** Files a model needs to be loaded for inference or as a starting point (no optimizer state). */
export function isWeightsFile(rel: string): boolean {
  const name = rel.split('/').pop() ?? rel;
  return !/^(optimizer\.pt|scheduler\.pt|rng_state.*\.pth|training_args\.bin|trainer_state\.json|scaler\.pt)$/.test(name);
}

/** A model the trainer can load, held in the worker's model cache until released. */
export interface LocalModel {
  /** The trainer's `model` argument: the base URI as is, or a local folder with the checkpoint's weights. */
  path: string;
  /** True when this request downloaded the weights (false: served by the cache, or not a stored checkpoint). */
  downloaded: boolean;
  /** Ends this use: the folder may be evicted once no one holds it (idempotent). */
  release(): Promise<void>;
}

/** Whether an eviction pass left the cache over its limit (then a release runs another). */
let overLimit = false;

/**
 * The argument the trainer's `model` field takes: the base URI as is, or a local directory holding
 * the checkpoint's weights (downloaded once per content hash, verified file by file), leased in the
 * model cache (activities/modelCache.ts) until `release()`: call it when the trainer or generation
 * that reads the folder has finished. Downloading evicts least recently used folders past
 * VALUEDRIFT_MODEL_CACHE_BYTES, never a leased one nor this one.
 */
export async function localModel(model: ModelHandle): Promise<LocalModel> {
  if (!model.manifest) return { path: model.uri, downloaded: false, release: async () => undefined };
  const env = workerEnv();
  const root = path.join(env.workDir, 'models');
  const key = model.manifest.sha256.slice(0, 32);
  const dest = path.join(root, key);
  const lease = await acquireLease(root, key);
  const release = async () => {
    await lease.release();
    if (overLimit) overLimit = (await evictLeastRecentlyUsed(root, env.VALUEDRIFT_MODEL_CACHE_BYTES)).totalBytes > env.VALUEDRIFT_MODEL_CACHE_BYTES;
  };
  try {
    const { reused } = await downloadDir(model.manifest, dest, { filter: isWeightsFile });
    await touchEntry(root, key);
    if (!reused || overLimit) {
      overLimit = (await evictLeastRecentlyUsed(root, env.VALUEDRIFT_MODEL_CACHE_BYTES, [key])).totalBytes > env.VALUEDRIFT_MODEL_CACHE_BYTES;
    }
    return { path: dest, downloaded: !reused, release };
  } catch (err) {
    await lease.release();
    throw err;
  }
}

const ModelKeyFile = z.object({ key: z.string().min(1), basis: z.string() });

/**
 * `resolveBaseModel` (GPU queue: where the trainer and its packaged models are installed): the
 * handle a lineage starts from, keyed by what its weights are — a hash of the packaged or local
 * weights, a hub model's id and revision, a stored checkpoint's manifest hash — never by its name,
 * so a changed file under the same name is a different model to every cache.
 */
export async function resolveBaseModel(input: { uri: string }): Promise<ModelHandle> {
  if (input.uri.startsWith('s3://')) {
    const uri = `${input.uri.replace(/\/+$/, '')}/${MANIFEST_NAME}`;
    const body = await getBytesIfExists(uri);
    if (!body) throw ApplicationFailure.nonRetryable(`base model ${input.uri}: no ${MANIFEST_NAME} there`, 'ModelNotFound');
    const manifest = { uri, sha256: sha256Hex(body), bytes: body.length };
    return { uri: input.uri, manifest, contentKey: manifest.sha256 };
  }
  const env = workerEnv();
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-model-key-'));
  const out = path.join(dir, 'key.json');
  const c = activityContext();
  // Hashing a large local model takes a while: keep heartbeating so a lost worker is noticed.
  const beat = setInterval(() => c?.heartbeat(), 10_000);
  try {
    await execFileAsync(env.python, ['-m', 'valuedrift_trainer', 'model-key', '--model', input.uri, '--out', out], {
      cwd: REPO_ROOT,
      // The trainer's allow-listed environment: no store, judge or Temporal credentials.
      env: childProcessEnv(),
      maxBuffer: 4 * 1024 * 1024,
      signal: c?.cancellationSignal,
    }).catch((err: unknown) => {
      const e = err as { stdout?: string; stderr?: string; message?: string };
      const event = (e.stdout ?? '').split('\n').map((l) => TrainerEvent.safeParse(safeJson(l))).find((r) => r.success && r.data.event === 'error');
      if (event?.success && event.data.event === 'error') {
        // The same URI gives the same answer on this worker: not worth retrying.
        throw ApplicationFailure.nonRetryable(scrubSecrets(`base model ${input.uri}: ${event.data.message}`), 'ModelNotFound');
      }
      // The message goes into workflow history: no credential value may be in it.
      throw new Error(scrubSecrets(`model-key for ${input.uri} failed: ${(e.stderr ?? e.message ?? '').slice(-2000)}`));
    });
    const { key } = ModelKeyFile.parse(JSON.parse(await fs.readFile(out, 'utf8')));
    return { uri: input.uri, contentKey: `model:${key}` };
  } finally {
    clearInterval(beat);
    await fs.rm(dir, { recursive: true, force: true });
  }
}

function safeJson(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return null;
  }
}
