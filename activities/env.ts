/**
 * The worker process's settings: the one module of the worker (worker/main.ts and every activity)
 * that reads the environment. Each variable is read here, once, with its default here (shared
 * defaults come from common/defaults.ts), parsed with zod (numbers coerced) so a malformed value
 * stops the worker at start naming the variable. Secrets and endpoints live here, never in workflow
 * inputs or histories.
 */
import * as path from 'node:path';
import { z } from 'zod';
import {
  DEFAULT_S3_BUCKET,
  DEFAULT_S3_REGION,
  DEFAULT_TEMPORAL_ADDRESS,
  DEFAULT_TEMPORAL_NAMESPACE,
  DEFAULT_TEMPORAL_UI_URL,
} from '../common/defaults';
import { DEFAULT_CACHE_FLUSH_EVERY, DEFAULT_CACHE_FLUSH_MS } from './judge/judgeAll';

/** A whole number read from a variable ("8" → 8; "8.5", "eight" → refused). */
const wholeNumber = () => z.coerce.number().int();

export const WORKER_ROLES = ['cpu', 'gpu', 'all'] as const;
export type WorkerRole = (typeof WORKER_ROLES)[number];

const Env = z.object({
  TEMPORAL_ADDRESS: z.string().default(DEFAULT_TEMPORAL_ADDRESS),
  TEMPORAL_NAMESPACE: z.string().default(DEFAULT_TEMPORAL_NAMESPACE),
  TEMPORAL_UI_URL: z.string().default(DEFAULT_TEMPORAL_UI_URL),
  TEMPORAL_TLS_CERT: z.string().optional(),
  TEMPORAL_TLS_KEY: z.string().optional(),
  TEMPORAL_API_KEY: z.string().optional(),
  VALUEDRIFT_S3_ENDPOINT: z.string().url().optional(),
  VALUEDRIFT_S3_BUCKET: z.string().min(3).default(DEFAULT_S3_BUCKET),
  VALUEDRIFT_S3_REGION: z.string().default(DEFAULT_S3_REGION),
  VALUEDRIFT_S3_FORCE_PATH_STYLE: z.enum(['true', 'false']).default('false'),
  VALUEDRIFT_JUDGE_BASE_URL: z.string().url().optional(),
  VALUEDRIFT_JUDGE_API_KEY: z.string().optional(),
  /** OpenAI-compatible endpoint that writes derived datasets' responses (synthetic pairs); unset: the judge's. */
  VALUEDRIFT_GENERATOR_BASE_URL: z.string().url().optional(),
  VALUEDRIFT_GENERATOR_API_KEY: z.string().optional(),
  /** Overrides the spec's judge model on this worker (e.g. the local judge's name), except for the models below. */
  VALUEDRIFT_JUDGE_MODEL: z.string().optional(),
  /**
   * Comma-separated model names the judge endpoint serves under their own names (the local stack's
   * judge serves every local judge): a spec naming one of them is judged by it, not overridden.
   */
  VALUEDRIFT_JUDGE_SERVED_MODELS: z
    .string()
    .optional()
    .transform((v) => (v ?? '').split(',').map((m) => m.trim()).filter((m) => m !== '')),
  /**
   * Judge answers are written to the judge cache in groups of this many (activities/judge/judgeAll.ts):
   * a killed worker pays again for fewer than this many judgments (RELIABILITY.md).
   */
  VALUEDRIFT_JUDGE_CACHE_FLUSH_EVERY: wholeNumber().positive().default(DEFAULT_CACHE_FLUSH_EVERY),
  /** …and no answer waits longer than this many milliseconds for its cache write. */
  VALUEDRIFT_JUDGE_CACHE_FLUSH_MS: wholeNumber().positive().default(DEFAULT_CACHE_FLUSH_MS),
  /**
   * Batch mode (`evaluation.judge.mode: "batch"`, workflows/evaluate.ts): the first poll of a batch
   * waits this long; each later wait doubles up to VALUEDRIFT_JUDGE_BATCH_MAX_POLL_MS; after
   * VALUEDRIFT_JUDGE_BATCH_MAX_POLLS polls the batch is cancelled and what it did not answer is
   * judged online. Polls are durable timers in the evaluation workflow, so a batch may run for days.
   */
  VALUEDRIFT_JUDGE_BATCH_POLL_MS: wholeNumber().min(100).default(60_000),
  VALUEDRIFT_JUDGE_BATCH_MAX_POLL_MS: wholeNumber().min(100).default(15 * 60_000),
  VALUEDRIFT_JUDGE_BATCH_MAX_POLLS: wholeNumber().min(1).max(1000).default(400),
  /**
   * A judge budget shared by every cpu worker (workflows/judgeBudget.ts): at most this many requests
   * and estimated tokens per VALUEDRIFT_JUDGE_BUDGET_WINDOW_MS (default one minute) reach each judge
   * endpoint + model, whichever worker sends them. Unset: no shared budget (each call backs off on
   * 429 on its own). Give every cpu worker the same values.
   */
  VALUEDRIFT_JUDGE_RPM: wholeNumber().positive().optional(),
  VALUEDRIFT_JUDGE_TPM: wholeNumber().positive().optional(),
  VALUEDRIFT_JUDGE_BUDGET_WINDOW_MS: wholeNumber().min(1000).default(60_000),
  /** JSON laid over data/plan/prices.json (as `lineage plan --prices`): prices the report's judge tokens. */
  VALUEDRIFT_PRICES_FILE: z.string().optional(),
  /** OpenAI's own key: sent only to OpenAI (when VALUEDRIFT_JUDGE_BASE_URL is unset), never to another endpoint. */
  OPENAI_API_KEY: z.string().optional(),
  /** The Python that runs the trainer; default: the repository's .venv. */
  VALUEDRIFT_PYTHON: z.string().optional(),
  /** Root for `file:` dataset URIs; default: the repository. */
  VALUEDRIFT_DATA_ROOT: z.string().optional(),
  /** Scratch space for checkpoints in flight and downloaded models; default: .data/work. */
  VALUEDRIFT_WORK_DIR: z.string().optional(),
  /**
   * Hub dataset mirrors in the hub's raw schema: a folder `<dir>/<owner>/<name>/` (read by the
   * trainer) or `s3://<bucket>[/<prefix>]` holding `<prefix>/<owner>/<name>/` (downloaded by the
   * worker, cached under the work dir; activities/datasets.ts).
   */
  VALUEDRIFT_HF_MIRROR: z
    .string()
    .refine((v) => !v.startsWith('s3:') || /^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?$/.test(v), 'an s3:// mirror is s3://<bucket>[/<prefix>]')
    .optional(),
  /**
   * Bytes the GPU node's model cache (`<work dir>/models`) may hold; past it the least recently used
   * models not in use are evicted after each download (activities/modelCache.ts). Default 200 GiB.
   */
  VALUEDRIFT_MODEL_CACHE_BYTES: wholeNumber().positive().default(200 * 1024 ** 3),
  /**
   * Bytes the store-mirror downloads (`<work dir>/hf-mirror`, VALUEDRIFT_HF_MIRROR=s3://…) may hold;
   * past it the least recently used mirrored ids not being read by a trainer are evicted after each
   * download (activities/modelCache.ts, as the model cache). Default 100 GiB.
   */
  VALUEDRIFT_HF_MIRROR_CACHE_BYTES: wholeNumber().positive().default(100 * 1024 ** 3),
  /**
   * A training stage whose trainer prints no event (progress, checkpoint) for this many seconds is
   * taken as hung: its process group is killed and the attempt fails retryably (`TrainerStalled`),
   * so the retry resumes from the last uploaded checkpoint. It covers model loading before the first
   * step too, and the trainer reports every step, so it must exceed the slowest step. Default 30 min.
   */
  VALUEDRIFT_TRAINER_STALL_SECONDS: wholeNumber().positive().default(30 * 60),
  /** Which task queues this worker serves: `cpu` (workflows, judge, store, reports), `gpu` (training, generation) or both. */
  VALUEDRIFT_WORKER_ROLE: z.enum(WORKER_ROLES).default('all'),
  /** Concurrent activities on the cpu queue. */
  VALUEDRIFT_CPU_CONCURRENCY: wholeNumber().positive().default(8),
  /** Gone: each training goes to the queue for its GPU count, and a node takes what its free GPUs fit (activities/gpus.ts). */
  VALUEDRIFT_GPUS_PER_JOB: z
    .never({ error: 'VALUEDRIFT_GPUS_PER_JOB is no longer read: a gpu worker takes jobs by their GPU count from the queue for that size while its GPUs are free; unset it' })
    .optional(),
  /** This node's GPU count when CUDA_VISIBLE_DEVICES is unset; default: what `nvidia-smi -L` lists. */
  VALUEDRIFT_GPUS: wholeNumber().min(0).optional(),
  /** The devices this worker may hand out (a worker confined to some GPUs hands out only those); "" = none. */
  CUDA_VISIBLE_DEVICES: z.string().optional(),
  /**
   * Multi-node training (a stage's `nodes` > 1; activities/multinode.ts): a folder every node mounts at
   * the same path. Only gpu workers with it poll the multi-node queues.
   */
  VALUEDRIFT_SHARED_DIR: z.string().refine((p) => path.isAbsolute(p), 'must be an absolute path (the same mount on every node)').optional(),
  /** Where the other nodes of a multi-node group reach this one (default: the hostname). */
  VALUEDRIFT_NODE_ADDR: z.string().optional(),
  /** How long a multi-node follower waits for its leader's rendezvous record. Default 15 min. */
  VALUEDRIFT_RENDEZVOUS_TIMEOUT_SECONDS: wholeNumber().positive().max(86_400).default(900),
});
export type WorkerEnv = z.infer<typeof Env> & { python: string; dataRoot: string; workDir: string };

/** The repository root (one level above this file). */
export const REPO_ROOT = path.resolve(__dirname, '..');

/** Variables where an empty value means something (no GPUs), not "unset". */
const EMPTY_IS_A_VALUE = new Set(['CUDA_VISIBLE_DEVICES']);

/** Parses an environment (pure: tests pass their own). An empty variable counts as unset. */
export function parseWorkerEnv(raw: Record<string, string | undefined>): WorkerEnv {
  const input = Object.fromEntries(Object.entries(raw).filter(([k, v]) => v !== undefined && (v !== '' || EMPTY_IS_A_VALUE.has(k))));
  const parsed = Env.safeParse(input);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}=${JSON.stringify(input[String(i.path[0])])}: ${i.message}`);
    throw new Error(`worker environment: ${problems.join('; ')}`);
  }
  const e = parsed.data;
  return {
    ...e,
    python: e.VALUEDRIFT_PYTHON ?? path.join(REPO_ROOT, '.venv', 'bin', 'python'),
    dataRoot: e.VALUEDRIFT_DATA_ROOT ?? REPO_ROOT,
    workDir: e.VALUEDRIFT_WORK_DIR ?? path.join(REPO_ROOT, '.data', 'work'),
  };
}

let cached: WorkerEnv | undefined;

/** This process's settings, read from the environment on first use. */
export function workerEnv(): WorkerEnv {
  cached ??= parseWorkerEnv(process.env);
  return cached;
}

/** For tests that change the environment between cases. */
export function resetWorkerEnv(): void {
  cached = undefined;
}

/**
 * Variable names whose value is a credential (`OPENAI_API_KEY`, `AWS_SECRET_ACCESS_KEY`,
 * `AWS_ACCESS_KEY_ID`, `HF_TOKEN`, `TEMPORAL_TLS_KEY`, `DB_PASSWORD`, …): a whole word KEY, SECRET,
 * TOKEN, PASSWORD or CREDENTIAL(S) in the name. `TOKENIZERS_PARALLELISM` is not one.
 */
export const SECRET_NAME = /(^|_)(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIALS?)(_|$)/i;

/** Credentials the trainer does need: downloading gated models from the Hugging Face hub. */
const TRAINER_CREDENTIALS = new Set(['HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN']);

/** What the trainer (Python, torch, transformers, TRL, accelerate, vLLM) reads: exact names… */
const TRAINER_VARS = new Set([
  'PATH', 'HOME', 'USER', 'LOGNAME', 'SHELL', 'TERM', 'TZ', 'LANG', 'LANGUAGE',
  'TMPDIR', 'TMP', 'TEMP', 'LD_LIBRARY_PATH', 'VIRTUAL_ENV', 'CONDA_PREFIX',
  'SSL_CERT_FILE', 'SSL_CERT_DIR', 'REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE',
  'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy',
  'XDG_CACHE_HOME', 'XDG_CONFIG_HOME', 'TOKENIZERS_PARALLELISM',
]);
/** …and prefixes (locale, Hugging Face, torch/CUDA/NCCL, threading libraries, our own settings). */
const TRAINER_PREFIXES = [
  'LC_', 'PYTHON', 'HF_', 'HUGGINGFACE_', 'TRANSFORMERS_', 'TRL_', 'ACCELERATE_', 'TORCH', 'PYTORCH_',
  'CUDA_', 'CUDNN_', 'CUBLAS_', 'NCCL_', 'NVIDIA_', 'TRITON_', 'VLLM_', 'OMP_', 'MKL_', 'KMP_', 'OPENBLAS_',
  'VALUEDRIFT_',
];

/**
 * Whether the trainer gets this variable: an allow-list of what it and its libraries read (the
 * trainer never talks to S3, Temporal or the judge: the activities do), and never a credential
 * other than the hub token.
 */
export function passedToTrainer(name: string): boolean {
  if (TRAINER_CREDENTIALS.has(name)) return true;
  if (SECRET_NAME.test(name)) return false;
  return TRAINER_VARS.has(name) || TRAINER_PREFIXES.some((p) => name.startsWith(p));
}

/**
 * The environment for a child process (the trainer): the allow-listed part of the worker's own,
 * passed through unread (PATH, HOME, HF_*, CUDA and NCCL settings reach the trainer as the operator
 * set them), plus `extra`. AWS, Temporal, judge and OpenAI credentials, and anything unlisted, stay
 * in the worker.
 */
export function childProcessEnv(extra: Record<string, string> = {}, from: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(from)) if (value !== undefined && passedToTrainer(name)) env[name] = value;
  return { ...env, ...extra };
}

/** Shorter values are not treated as secrets when scrubbing: they would blank out ordinary words. */
const MIN_SECRET_LENGTH = 8;

/** The credential values in an environment (by SECRET_NAME), longest first. */
export function secretValues(from: NodeJS.ProcessEnv = process.env): string[] {
  const values = Object.entries(from)
    .filter(([name, v]) => v !== undefined && v.length >= MIN_SECRET_LENGTH && SECRET_NAME.test(name))
    .map(([, v]) => v as string);
  return [...new Set(values)].sort((a, b) => b.length - a.length);
}

/**
 * `text` with every credential value of this worker's environment replaced by `[redacted]`: for
 * anything that leaves the worker in a failure message (trainer stderr, a provider's error text),
 * since failure messages are kept in workflow history.
 */
export function scrubSecrets(text: string, secrets: readonly string[] = secretValues()): string {
  let out = text;
  for (const s of secrets) out = out.split(s).join('[redacted]');
  return out;
}
