/**
 * The embedded local stack: Temporal's dev server, an S3-compatible server, the local judge and the
 * workers, each a detached process in its own process group so that it outlives `npm run dev:up`.
 *
 * What runs is recorded in `.data/stack.json`; `stackDown` stops exactly those process groups and
 * nothing else. `.data/stack.env` holds the environment a worker, the CLI or a test needs to reach
 * the stack (read it with `loadStackEnv`).
 *
 * Storage: Temporal keeps its state in `.data/temporal/temporal.db` (SQLite), so workflow histories
 * survive a restart. The S3 server is moto, which keeps objects in memory (large ones spooled to
 * temporary files): moto 5.2.5 has no persistence (its request "recorder" replays raw requests and
 * cannot replay multipart uploads, which checkpoints use), so A STACK RESTART LOSES THE BUCKET'S
 * CONTENTS. Point VALUEDRIFT_S3_* at a real S3 / R2 / MinIO to keep artifacts.
 */
import fs from 'node:fs';
import path from 'node:path';

import { CreateBucketCommand, HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { z } from 'zod';

import { TASK_QUEUES } from '../common/config';
import {
  DATA_DIR,
  JUDGE_SERVER_PID_FILE,
  LOG_DIR,
  REPO_ROOT,
  S3_DATA_DIR,
  STACK_ENV_FILE,
  STACK_FILE,
  STACK_LOCK_FILE,
  TEMPORAL_DATA_DIR,
  TEMPORAL_DB_FILE,
  TSX_BIN,
  logFileFor,
} from './paths';
import {
  JUDGE_API_KEY,
  JUDGE_BASE_URL,
  JUDGE_MODEL,
  JUDGE_PORT,
  LOCAL_HOST,
  LOCAL_JUDGE_ENV,
  LOCAL_JUDGE_KIND,
  S3_ACCESS_KEY_ID,
  S3_BUCKET,
  S3_ENDPOINT,
  S3_PORT,
  S3_REGION,
  S3_SECRET_ACCESS_KEY,
  SEARCH_ATTRIBUTES,
  SERVICE,
  type ServiceName,
  TEMPORAL_ADDRESS,
  TEMPORAL_NAMESPACE,
  TEMPORAL_PORT,
  TEMPORAL_UI_PORT,
  TEMPORAL_UI_URL,
  type WorkerRole,
} from './ports';
import {
  type LogFn,
  portOpen,
  processGroupOf,
  processIdentity,
  recordedProcessAlive,
  runCommand,
  spawnDetached,
  stopGroup,
  tailFile,
  waitUntil,
  withFileLock,
} from './proc';
import { type PythonEnv, ensurePythonEnv } from './python';

// ---- bounds -------------------------------------------------------------------------------------

/** First start creates the SQLite schema; on 2 busy cores that has taken ~10 s. */
const TEMPORAL_READY_TIMEOUT_MS = 90_000;
/** moto imports botocore's service models at start: a few seconds. */
const S3_READY_TIMEOUT_MS = 60_000;
/** The judge loads its model (MiniLM encoder ~4 s, or a GGUF into llama.cpp) before it answers. */
const JUDGE_READY_TIMEOUT_MS = 180_000;
/** A worker bundles the workflow code (webpack) before it polls: ~10 s on 2 busy cores. */
const WORKER_READY_TIMEOUT_MS = 120_000;
/**
 * A recorded process that is alive but does not answer within this is restarted. Short: the stack
 * lock means nobody else can be starting it right now.
 */
const REUSE_PROBE_TIMEOUT_MS = 15_000;
/** Between SIGTERM and SIGKILL: Temporal flushes SQLite and the workers finish their heartbeat. */
const STOP_GRACE_MS = 10_000;
/** A single probe of a health check. */
const PROBE_TIMEOUT_MS = 3_000;
/** `dev:up` and `npm test` may run at once; the second waits for the first to finish starting. */
const STACK_LOCK_TIMEOUT_MS = 10 * 60_000;

// ---- records ------------------------------------------------------------------------------------

const ServiceRecord = z.object({
  name: z.string(),
  pid: z.number().int().positive(),
  pgid: z.number().int().positive(),
  /** `processIdentity(pid)` at spawn: tells our process from a later one that reuses the pid. */
  identity: z.string(),
  port: z.number().int().nullable(),
  startedAt: z.string(),
  cmd: z.array(z.string()),
  logFile: z.string(),
});
export type ServiceRecord = z.infer<typeof ServiceRecord>;

const StackFile = z.object({ services: z.array(ServiceRecord) });
type StackFile = z.infer<typeof StackFile>;

function readStackFile(): StackFile {
  let text: string;
  try {
    text = fs.readFileSync(STACK_FILE, 'utf8');
  } catch {
    return { services: [] };
  }
  const parsed = StackFile.safeParse(JSON.parse(text));
  if (!parsed.success) {
    throw new Error(`${STACK_FILE} is not a stack record (${parsed.error.message}); stop its processes by hand and delete it`);
  }
  return parsed.data;
}

function writeStackFile(file: StackFile): void {
  fs.mkdirSync(DATA_DIR, { recursive: true });
  const tmp = `${STACK_FILE}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(file, null, 2)}\n`);
  fs.renameSync(tmp, STACK_FILE);
}

function putRecord(record: ServiceRecord): void {
  const file = readStackFile();
  writeStackFile({ services: [...file.services.filter((s) => s.name !== record.name), record] });
}

function dropRecord(name: string): void {
  const file = readStackFile();
  writeStackFile({ services: file.services.filter((s) => s.name !== name) });
}

// ---- stack.env ----------------------------------------------------------------------------------

/** The environment a worker, the CLI or a test needs to use the local stack. */
export function stackEnvironment(py: PythonEnv): Record<string, string> {
  return {
    TEMPORAL_ADDRESS,
    TEMPORAL_NAMESPACE,
    TEMPORAL_UI_URL,
    VALUEDRIFT_S3_ENDPOINT: S3_ENDPOINT,
    VALUEDRIFT_S3_BUCKET: S3_BUCKET,
    VALUEDRIFT_S3_REGION: S3_REGION,
    VALUEDRIFT_S3_FORCE_PATH_STYLE: 'true',
    AWS_ACCESS_KEY_ID: S3_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY: S3_SECRET_ACCESS_KEY,
    VALUEDRIFT_JUDGE_BASE_URL: JUDGE_BASE_URL,
    VALUEDRIFT_JUDGE_MODEL: JUDGE_MODEL,
    VALUEDRIFT_JUDGE_API_KEY: JUDGE_API_KEY,
    VALUEDRIFT_PYTHON: py.python,
    VALUEDRIFT_TEMPORAL_BIN: py.temporalBin,
    VALUEDRIFT_TEST_SERVER_BIN: py.testServerBin,
  };
}

function writeStackEnv(env: Record<string, string>): void {
  const lines = [
    '# Written by infra/stack.ts (npm run dev:up / npm test): how to reach the local stack.',
    '# NOTE: the local S3 server (moto) keeps objects in memory; a stack restart empties the bucket.',
    ...Object.entries(env).map(([key, value]) => `${key}=${value}`),
  ];
  fs.mkdirSync(DATA_DIR, { recursive: true });
  fs.writeFileSync(STACK_ENV_FILE, `${lines.join('\n')}\n`);
}

/** Reads `.data/stack.env` (KEY=VALUE lines). Throws, saying how to start the stack, when absent. */
export function loadStackEnv(file: string = STACK_ENV_FILE): Record<string, string> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new Error(`${file} not found: the local stack is not up (run \`npm run dev:up\`)`);
  }
  const env: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Error(`${file}: malformed line ${JSON.stringify(raw)}`);
    env[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return env;
}

// ---- services -----------------------------------------------------------------------------------

interface ServiceSpec {
  name: ServiceName;
  port: number | null;
  cmd: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  readyTimeoutMs: number;
  /** One quick probe: is the service answering? */
  healthy: () => Promise<boolean>;
  /**
   * One quick probe of a recorded, live service: does it answer as something other than what this
   * stack wants now (e.g. the judge of the other kind)? Says what, so that it is replaced at once.
   */
  mismatch?: () => Promise<string | null>;
  /** Runs right before the spawn (clears what a previous run of the service left). */
  beforeStart?: () => void;
  /** Idempotent setup once healthy (search attributes, bucket). Runs on reuse too. */
  afterReady?: () => Promise<void>;
}

/** The environment for our children: ours, without variables that would point the tools elsewhere. */
function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(env)) {
    // A researcher's Temporal Cloud profile or API key must not leak into the local tools.
    if (key.startsWith('TEMPORAL_')) delete env[key];
  }
  return { ...env, ...extra };
}

async function httpAnswers(url: string, okOnly: boolean): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
    await res.arrayBuffer();
    return okOnly ? res.ok : true;
  } catch {
    return false;
  }
}

/** Flags that keep the CLI on our server whatever the user's Temporal config or env says. */
function temporalCliConnection(): string[] {
  return ['--address', TEMPORAL_ADDRESS, '--namespace', TEMPORAL_NAMESPACE, '--disable-config-file', '--disable-config-env'];
}

async function temporalHealthy(py: PythonEnv): Promise<boolean> {
  if (!(await portOpen(LOCAL_HOST, TEMPORAL_PORT, PROBE_TIMEOUT_MS))) return false;
  if (!(await portOpen(LOCAL_HOST, TEMPORAL_UI_PORT, PROBE_TIMEOUT_MS))) return false;
  const res = await runCommand(
    py.temporalBin,
    ['operator', 'cluster', 'health', ...temporalCliConnection(), '--command-timeout', '5s'],
    { timeoutMs: 15_000, env: childEnv({}) },
  );
  return res.code === 0 && res.stdout.includes('SERVING');
}

const SearchAttributeList = z.object({ customAttributes: z.record(z.string(), z.string()).optional() });

/** Registers the search attributes the workflows set. start-dev only registers them on a fresh DB. */
async function ensureSearchAttributes(py: PythonEnv, log: LogFn): Promise<void> {
  const list = await runCommand(py.temporalBin, ['operator', 'search-attribute', 'list', ...temporalCliConnection(), '-o', 'json'], {
    timeoutMs: 30_000,
    env: childEnv({}),
  });
  if (list.code !== 0) throw new Error(`temporal: listing search attributes failed: ${list.stderr || list.stdout}`);
  const existing = SearchAttributeList.parse(JSON.parse(list.stdout)).customAttributes ?? {};
  const wrongType = SEARCH_ATTRIBUTES.filter((n) => existing[n] !== undefined && existing[n] !== 'INDEXED_VALUE_TYPE_KEYWORD');
  if (wrongType.length > 0) {
    throw new Error(
      `temporal: search attributes ${wrongType.join(', ')} exist with another type than Keyword ` +
        `(${wrongType.map((n) => existing[n]).join(', ')}); delete ${TEMPORAL_DB_FILE} to start over`,
    );
  }
  const missing = SEARCH_ATTRIBUTES.filter((n) => existing[n] === undefined);
  if (missing.length === 0) return;
  log(`temporal: registering search attributes ${missing.join(', ')}`);
  const create = await runCommand(
    py.temporalBin,
    ['operator', 'search-attribute', 'create', ...missing.flatMap((n) => ['--name', n]), '--type', 'Keyword', ...temporalCliConnection()],
    { timeoutMs: 30_000, env: childEnv({}) },
  );
  if (create.code !== 0) throw new Error(`temporal: creating search attributes failed: ${create.stderr || create.stdout}`);
}

function localS3Client(): S3Client {
  return new S3Client({
    endpoint: S3_ENDPOINT,
    region: S3_REGION,
    forcePathStyle: true,
    credentials: { accessKeyId: S3_ACCESS_KEY_ID, secretAccessKey: S3_SECRET_ACCESS_KEY },
  });
}

function httpStatusOf(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null || !('$metadata' in err)) return undefined;
  const meta: unknown = err.$metadata;
  if (typeof meta !== 'object' || meta === null || !('httpStatusCode' in meta)) return undefined;
  return typeof meta.httpStatusCode === 'number' ? meta.httpStatusCode : undefined;
}

async function ensureBucket(log: LogFn): Promise<void> {
  const s3 = localS3Client();
  try {
    await s3.send(new HeadBucketCommand({ Bucket: S3_BUCKET }));
  } catch (err) {
    if (httpStatusOf(err) !== 404) throw err;
    log(`s3: creating bucket ${S3_BUCKET}`);
    await s3.send(new CreateBucketCommand({ Bucket: S3_BUCKET }));
  } finally {
    s3.destroy();
  }
}

/**
 * The judge runs `startLocalJudge` from `infra/judge/serve.ts` (the judge's own code) inside
 * `infra/judge-process.ts`, a small long-lived wrapper, so that the server outlives `dev:up`.
 */
const JUDGE_PROCESS_FILE = path.join(REPO_ROOT, 'infra', 'judge-process.ts');
const WORKER_MAIN_FILE = path.join(REPO_ROOT, 'worker', 'main.ts');

function temporalSpec(py: PythonEnv, log: LogFn): ServiceSpec {
  return {
    name: SERVICE.temporal,
    port: TEMPORAL_PORT,
    cmd: py.temporalBin,
    args: [
      'server', 'start-dev',
      '--ip', LOCAL_HOST,
      '--port', String(TEMPORAL_PORT),
      '--ui-port', String(TEMPORAL_UI_PORT),
      '--db-filename', TEMPORAL_DB_FILE,
      '--namespace', TEMPORAL_NAMESPACE,
      '--log-level', 'warn',
      // The UI's news feed is fetched from the internet; nothing here may need it.
      '--ui-disable-news-fetch',
      ...SEARCH_ATTRIBUTES.flatMap((name) => ['--search-attribute', `${name}=Keyword`]),
    ],
    env: childEnv({}),
    readyTimeoutMs: TEMPORAL_READY_TIMEOUT_MS,
    healthy: () => temporalHealthy(py),
    afterReady: () => ensureSearchAttributes(py, log),
  };
}

function s3Spec(py: PythonEnv, log: LogFn): ServiceSpec {
  return {
    name: SERVICE.s3,
    port: S3_PORT,
    cmd: py.python,
    args: ['-m', 'moto.server', '-H', LOCAL_HOST, '-p', String(S3_PORT)],
    // moto spools objects above ~5 MB to temporary files: keep them on the project's disk rather
    // than a possibly RAM-backed /tmp (checkpoints are hundreds of MB).
    env: childEnv({ TMPDIR: S3_DATA_DIR, PYTHONUNBUFFERED: '1' }),
    readyTimeoutMs: S3_READY_TIMEOUT_MS,
    // ListBuckets: cheap and independent of what is stored. (moto's /moto-api/data.json serialises
    // every object, takes long with checkpoints in it, and can answer 500 for a stale multipart
    // upload; a failed probe restarts the server, and a restart empties the in-memory bucket.)
    healthy: () => httpAnswers(`${S3_ENDPOINT}/`, true),
    afterReady: () => ensureBucket(log),
  };
}

const JudgeModelList = z.object({ data: z.array(z.object({ id: z.string() })).optional() });

/** The model ids the judge server on JUDGE_PORT lists, or null when nothing answers there. */
async function judgeModels(): Promise<string[] | null> {
  try {
    const res = await fetch(`${JUDGE_BASE_URL}/models`, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
    if (!res.ok) {
      await res.arrayBuffer();
      return null;
    }
    const parsed = JudgeModelList.safeParse(await res.json());
    return parsed.success ? (parsed.data.data ?? []).map((m) => m.id) : [];
  } catch {
    return null;
  }
}

/**
 * Records the judge server that the judge process started in its own process group, so that
 * `stackDown` stops it even if the judge process died without stopping it.
 */
function recordJudgeServer(judgeProcess: ServiceRecord | undefined): void {
  const server = judgeServerPid();
  if (server === null) return;
  const { pid, identity } = server;
  putRecord({
    name: SERVICE.judgeServer,
    pid,
    pgid: pid, // started detached by startLocalJudge
    identity,
    port: JUDGE_PORT,
    startedAt: judgeProcess?.startedAt ?? new Date().toISOString(),
    cmd: [`(${LOCAL_JUDGE_KIND === 'minilm' ? 'stance_server.py' : 'llama_cpp.server'} serving ${JUDGE_MODEL}, started by infra/judge-process.ts)`],
    logFile: logFileFor(SERVICE.judge),
  });
}

/** The judge server's pid once the judge process has written it (it does so once serving). */
function judgeServerPid(): { pid: number; identity: string } | null {
  let pid: number;
  try {
    pid = Number(fs.readFileSync(JUDGE_SERVER_PID_FILE, 'utf8').trim());
  } catch {
    return null;
  }
  const identity = Number.isInteger(pid) && pid > 0 ? processIdentity(pid) : null;
  return identity === null ? null : { pid, identity };
}

function judgeSpec(py: PythonEnv): ServiceSpec {
  return {
    name: SERVICE.judge,
    port: JUDGE_PORT,
    cmd: TSX_BIN,
    args: [
      JUDGE_PROCESS_FILE,
      '--kind', LOCAL_JUDGE_KIND,
      '--host', LOCAL_HOST,
      '--port', String(JUDGE_PORT),
      '--python', py.python,
      '--pid-file', JUDGE_SERVER_PID_FILE,
    ],
    env: childEnv({ ...stackEnvironment(py), [LOCAL_JUDGE_ENV]: LOCAL_JUDGE_KIND, PYTHONUNBUFFERED: '1' }),
    readyTimeoutMs: JUDGE_READY_TIMEOUT_MS,
    beforeStart: () => fs.rmSync(JUDGE_SERVER_PID_FILE, { force: true }),
    // Up when the server lists the model stack.env names and the judge process has reported its pid.
    healthy: async () => ((await judgeModels())?.includes(JUDGE_MODEL) ?? false) && judgeServerPid() !== null,
    // A judge of the other kind (VALUEDRIFT_LOCAL_JUDGE changed since it started) is replaced.
    mismatch: async () => {
      const models = await judgeModels();
      if (models === null || models.includes(JUDGE_MODEL)) return null;
      return `serves ${models.length === 0 ? 'no model' : models.join(', ')}, not ${JUDGE_MODEL} (${LOCAL_JUDGE_ENV}=${LOCAL_JUDGE_KIND})`;
    },
    afterReady: () => {
      recordJudgeServer(readStackFile().services.find((s) => s.name === SERVICE.judge));
      return Promise.resolve();
    },
  };
}

/** A queue each role polls, and the kind of task it polls there (see worker/main.ts). */
const WORKER_PROBE_QUEUE: Record<WorkerRole, { queue: string; type: 'workflow' | 'activity' }> = {
  cpu: { queue: TASK_QUEUES.workflows, type: 'workflow' },
  gpu: { queue: TASK_QUEUES.gpu, type: 'activity' },
};

const TaskQueuePollers = z.object({ pollers: z.array(z.object({ identity: z.string().optional() })).optional() });

/**
 * A worker has no port: it is up when Temporal lists a poller on its queue whose process (the pid
 * in the SDK's default identity `pid@host`) belongs to the worker's process group. Pollers of a
 * worker that died stay listed for a while; the group check skips them.
 */
async function workerPolling(py: PythonEnv, role: WorkerRole): Promise<boolean> {
  const record = readStackFile().services.find((s) => s.name === workerName(role));
  if (record === undefined) return false;
  const { queue, type } = WORKER_PROBE_QUEUE[role];
  const res = await runCommand(
    py.temporalBin,
    ['task-queue', 'describe', '--task-queue', queue, '--legacy-mode', '--task-queue-type-legacy', type, '-o', 'json', ...temporalCliConnection()],
    { timeoutMs: 15_000, env: childEnv({}) },
  );
  if (res.code !== 0) return false;
  const pollers = TaskQueuePollers.safeParse(JSON.parse(res.stdout)).data?.pollers ?? [];
  return pollers.some((p) => {
    const pid = Number(p.identity?.split('@')[0]);
    if (!Number.isInteger(pid) || pid <= 0) return false;
    const group = processGroupOf(pid);
    return group === undefined || group === record.pgid; // no /proc: any live poller will do
  });
}

function workerName(role: WorkerRole): ServiceName {
  return role === 'cpu' ? SERVICE.workerCpu : SERVICE.workerGpu;
}

function workerSpec(py: PythonEnv, role: WorkerRole): ServiceSpec {
  return {
    name: workerName(role),
    port: null,
    cmd: TSX_BIN,
    args: [path.relative(REPO_ROOT, WORKER_MAIN_FILE)],
    env: childEnv({ ...stackEnvironment(py), VALUEDRIFT_WORKER_ROLE: role }),
    readyTimeoutMs: WORKER_READY_TIMEOUT_MS,
    healthy: () => workerPolling(py, role),
  };
}

// ---- up / down / status -------------------------------------------------------------------------

export interface StackUpOptions {
  workers: boolean;
  judge: boolean;
  log: LogFn;
  /** On failure, stop what this call had started before rethrowing (tests: leave nothing behind). */
  rollbackOnFailure?: boolean;
}

export interface StackUpResult {
  /** Services this call started (a caller that wants to undo exactly its own work stops these). */
  started: ServiceName[];
  /** Services that were already running and healthy. */
  reused: ServiceName[];
  env: Record<string, string>;
  python: PythonEnv;
}

class ServiceStartError extends Error {
  override readonly name = 'ServiceStartError';
}

function startError(spec: ServiceSpec, reason: string): ServiceStartError {
  const logFile = logFileFor(spec.name);
  return new ServiceStartError(
    `${spec.name}: failed to start (${reason}). Log: ${logFile}\n--- last lines of ${path.relative(REPO_ROOT, logFile)} ---\n${tailFile(logFile)}`,
  );
}

/** Records stopped together with a service: what it started in process groups of their own. */
const COMPANIONS: Partial<Record<string, readonly ServiceName[]>> = { [SERVICE.judge]: [SERVICE.judgeServer] };

/** The names plus their companions. */
function withCompanions(names: readonly string[]): string[] {
  return [...new Set(names.flatMap((n) => [n, ...(COMPANIONS[n] ?? [])]))];
}

async function stopRecord(record: ServiceRecord, log: LogFn): Promise<void> {
  // The judge's server gets a little longer: the judge process stops it (5 s + 5 s) first.
  const outcome = await stopGroup(record, record.name === SERVICE.judge ? STOP_GRACE_MS + 5_000 : STOP_GRACE_MS);
  if (outcome === 'not-ours') log(`${record.name}: pid ${record.pid} now belongs to another process; left alone`);
  else if (outcome !== 'gone') log(`${record.name}: ${outcome} (pid ${record.pid})`);
  dropRecord(record.name);
}

/** Stops a recorded service and its companions (companions last: the service stops them first). */
async function stopNamed(name: string, log: LogFn): Promise<void> {
  for (const n of withCompanions([name])) {
    const record = readStackFile().services.find((s) => s.name === n);
    if (record !== undefined) await stopRecord(record, log);
  }
}

/** Starts one service, or reuses the recorded one when it is alive and healthy. */
async function upService(spec: ServiceSpec, log: LogFn): Promise<'started' | 'reused'> {
  const record = readStackFile().services.find((s) => s.name === spec.name);
  if (record !== undefined) {
    const mismatch = recordedProcessAlive(record) ? ((await spec.mismatch?.()) ?? null) : null;
    if (mismatch !== null) {
      log(`${spec.name}: recorded process ${record.pid} ${mismatch}; replacing it`);
    } else if (recordedProcessAlive(record)) {
      const ready = await waitUntil(spec.healthy, {
        timeoutMs: Math.min(spec.readyTimeoutMs, REUSE_PROBE_TIMEOUT_MS),
        abort: () => (recordedProcessAlive(record) ? null : 'exited'),
      });
      if (ready.ok) {
        await spec.afterReady?.();
        return 'reused';
      }
      log(`${spec.name}: recorded process ${record.pid} is not healthy (${ready.reason}); restarting it`);
    } else {
      log(`${spec.name}: recorded process ${record.pid} has exited; restarting it (log: ${record.logFile})`);
    }
  }
  // Also clears companions left behind by a service that died (e.g. a judge server still on its port).
  await stopNamed(spec.name, log);

  if (spec.port !== null && (await portOpen(LOCAL_HOST, spec.port, PROBE_TIMEOUT_MS))) {
    throw new ServiceStartError(
      `${spec.name}: port ${LOCAL_HOST}:${spec.port} is already in use by a process this stack did not start ` +
        `(not in ${STACK_FILE}). Stop it, or move this stack with the VALUEDRIFT_*_PORT variables (infra/ports.ts).`,
    );
  }

  spec.beforeStart?.();
  const logFile = logFileFor(spec.name);
  const pid = await spawnDetached({ cmd: spec.cmd, args: spec.args, cwd: REPO_ROOT, env: spec.env, logFile });
  const identity = processIdentity(pid);
  const started: ServiceRecord = {
    name: spec.name,
    pid,
    pgid: pid, // detached: the child leads its own group
    identity: identity ?? `exited-at-spawn:${Date.now()}`,
    port: spec.port,
    startedAt: new Date().toISOString(),
    cmd: [spec.cmd, ...spec.args],
    logFile,
  };
  // Record before waiting, so that a crash of ours here still leaves a record for stackDown.
  putRecord(started);
  log(`${spec.name}: started pid ${pid}${spec.port === null ? '' : ` on ${LOCAL_HOST}:${spec.port}`}, log ${path.relative(REPO_ROOT, logFile)}`);

  const ready = await waitUntil(spec.healthy, {
    timeoutMs: spec.readyTimeoutMs,
    abort: () => (recordedProcessAlive(started) ? null : 'the process exited'),
  });
  if (!ready.ok) {
    const error = startError(spec, ready.reason);
    await stopNamed(spec.name, log);
    throw error;
  }
  await spec.afterReady?.();
  return 'started';
}

/**
 * Brings the local stack up (idempotent): Temporal, S3, optionally the judge and the two workers.
 * A recorded service that is alive and healthy is reused, a dead or unhealthy one restarted.
 */
export async function stackUp(opts: StackUpOptions): Promise<StackUpResult> {
  const { log } = opts;
  const py = await ensurePythonEnv({ log });
  for (const dir of [DATA_DIR, LOG_DIR, TEMPORAL_DATA_DIR, S3_DATA_DIR]) fs.mkdirSync(dir, { recursive: true });

  return withFileLock(STACK_LOCK_FILE, { timeoutMs: STACK_LOCK_TIMEOUT_MS, what: 'stack', log }, async () => {
    const result: StackUpResult = { started: [], reused: [], env: stackEnvironment(py), python: py };
    const specs: ServiceSpec[] = [temporalSpec(py, log), s3Spec(py, log)];
    if (opts.judge) specs.push(judgeSpec(py));
    if (opts.workers) {
      if (!fs.existsSync(WORKER_MAIN_FILE)) {
        throw new ServiceStartError(`workers: ${path.relative(REPO_ROOT, WORKER_MAIN_FILE)} does not exist`);
      }
      specs.push(workerSpec(py, 'cpu'), workerSpec(py, 'gpu'));
    }
    // stack.env first: the workers and the judge read it, and so can a user while we start.
    writeStackEnv(result.env);
    try {
      for (const spec of specs) {
        const outcome = await upService(spec, log);
        result[outcome === 'started' ? 'started' : 'reused'].push(spec.name);
      }
    } catch (err) {
      if (opts.rollbackOnFailure === true) {
        for (const name of [...result.started].reverse()) await stopNamed(name, log);
      }
      throw err;
    }
    return result;
  });
}

/** Order of shutdown: clients of a service stop before the service. */
const STOP_ORDER: readonly string[] = [
  SERVICE.workerCpu,
  SERVICE.workerGpu,
  SERVICE.judge,
  SERVICE.judgeServer,
  SERVICE.s3,
  SERVICE.temporal,
];

/**
 * Stops the recorded services (all, or `only` those named): their whole process groups, SIGTERM
 * then SIGKILL. Never signals a process it did not start.
 */
export async function stackDown(opts: { only?: readonly string[]; log?: LogFn } = {}): Promise<string[]> {
  const log = opts.log ?? ((line: string) => console.log(line));
  if (!fs.existsSync(STACK_FILE)) return [];
  return withFileLock(STACK_LOCK_FILE, { timeoutMs: STACK_LOCK_TIMEOUT_MS, what: 'stack', log }, async () => {
    // Unknown (older) names rank -1: stopped first.
    const rank = (name: string) => STOP_ORDER.indexOf(name);
    const only = opts.only === undefined ? undefined : withCompanions(opts.only);
    const targets = readStackFile()
      .services.filter((s) => only === undefined || only.includes(s.name))
      .sort((a, b) => rank(a.name) - rank(b.name));
    for (const record of targets) await stopRecord(record, log);
    if (readStackFile().services.length === 0) fs.rmSync(STACK_ENV_FILE, { force: true });
    return targets.map((t) => t.name);
  });
}

export interface ServiceStatus {
  name: string;
  pid: number;
  port: number | null;
  alive: boolean;
  /** Port accepting connections (null for services without a port). */
  listening: boolean | null;
  startedAt: string;
  logFile: string;
}

/** What `.data/stack.json` records, with a liveness check of each process. */
export async function stackStatus(): Promise<ServiceStatus[]> {
  const services = readStackFile().services;
  return Promise.all(
    services.map(async (s) => ({
      name: s.name,
      pid: s.pid,
      port: s.port,
      alive: recordedProcessAlive(s),
      listening: s.port === null ? null : await portOpen(LOCAL_HOST, s.port, PROBE_TIMEOUT_MS),
      startedAt: s.startedAt,
      logFile: s.logFile,
    })),
  );
}
