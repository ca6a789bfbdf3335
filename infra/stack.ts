/**
 * The embedded local stack's lifecycle: Temporal's dev server, the S3-compatible server, the local
 * judge and the workers (each a `LocalService`, infra/services/), started in dependency order and
 * stopped in the reverse. Each runs detached in its own process group so that it outlives
 * `npm run dev:up`.
 *
 * What runs is recorded in `<data dir>/stack.json` (infra/stackRecord.ts); `stackDown` stops exactly
 * those process groups and nothing else. `<data dir>/stack.env` (infra/stackEnv.ts) holds the
 * environment a worker, the CLI or a test needs to reach the stack. The data directory is
 * `VALUEDRIFT_DATA_DIR` (default `.data/`): with other ports (infra/settings.ts) a second stack
 * runs beside the first.
 *
 * Storage: Temporal keeps its state in `<data dir>/temporal/temporal.db` (SQLite) and the S3 server
 * its objects in `<data dir>/s3/` (infra/services/s3.ts), so workflow histories and the artifacts
 * they point at both survive a restart.
 */
import fs from 'node:fs';
import path from 'node:path';

import { DATA, type DataPaths } from './paths';
import {
  type LogFn,
  portOpen,
  processIdentity,
  recordedProcessAlive,
  spawnDetached,
  stopGroup,
  tailFile,
  waitUntil,
  withFileLock,
} from './proc';
import { type PythonEnv, ensurePythonEnv, pythonEnvPaths } from './python';
import { judgeService } from './services/judge';
import { ensureS3Server, s3Service } from './services/s3';
import { DEFAULT_STOP_GRACE_MS, type LocalService, PROBE_TIMEOUT_MS, SERVICE, type ServiceContext, type ServiceName } from './services/service';
import { temporalService } from './services/temporal';
import { STACK_WORKER_ROLES, workerName, workerService } from './services/worker';
import { type InfraSettings, REPO_ROOT, settings as processSettings } from './settings';
import { stackEnvironment, writeStackEnv } from './stackEnv';
import { type ServiceRecord, StackRecord } from './stackRecord';

/**
 * A recorded process that is alive but does not answer within this is restarted. Short: the stack
 * lock means nobody else can be starting it right now.
 */
const REUSE_PROBE_TIMEOUT_MS = 15_000;
/** `dev:up` and `npm test` may run at once; the second waits for the first to finish starting. */
const STACK_LOCK_TIMEOUT_MS = 10 * 60_000;

/** Which stack: its settings and data directory (default: this process's). */
export interface StackTarget {
  settings: InfraSettings;
  data: DataPaths;
}

const defaultTarget = (): StackTarget => ({ settings: processSettings, data: DATA });

function context(target: StackTarget, py: PythonEnv, log: LogFn): ServiceContext {
  return { ...target, py, log, records: new StackRecord(target.data.stackFile) };
}

/** Every service the stack can run, in start order (a service's dependencies come before it). */
function allServices(ctx: ServiceContext): LocalService[] {
  return [temporalService(ctx), s3Service(ctx), judgeService(ctx), ...STACK_WORKER_ROLES.map((role) => workerService(ctx, role))];
}

const WORKERS: ReadonlySet<string> = new Set(STACK_WORKER_ROLES.map(workerName));

class ServiceStartError extends Error {
  override readonly name = 'ServiceStartError';
}

function startError(service: LocalService, reason: string): ServiceStartError {
  return new ServiceStartError(
    `${service.name}: failed to start (${reason}). Log: ${service.logFile}\n` +
      `--- last lines of ${path.relative(REPO_ROOT, service.logFile)} ---\n${tailFile(service.logFile)}`,
  );
}

async function stopRecord(ctx: ServiceContext, record: ServiceRecord, graceMs: number): Promise<void> {
  const outcome = await stopGroup(record, graceMs);
  if (outcome === 'not-ours') ctx.log(`${record.name}: pid ${record.pid} now belongs to another process; left alone`);
  else if (outcome !== 'gone') ctx.log(`${record.name}: ${outcome} (pid ${record.pid})`);
  ctx.records.drop(record.name);
}

/** Stops a recorded service and its companions (companions last: the service stops them first). */
async function stopService(ctx: ServiceContext, service: LocalService): Promise<void> {
  for (const name of [service.name, ...service.companions]) {
    const record = ctx.records.find(name);
    if (record !== undefined) await stopRecord(ctx, record, name === service.name ? service.stopGraceMs : DEFAULT_STOP_GRACE_MS);
  }
}

/** Starts one service, or reuses the recorded one when it is alive and healthy. */
async function upService(ctx: ServiceContext, service: LocalService): Promise<'started' | 'reused'> {
  const { log, records } = ctx;
  const record = records.find(service.name);
  if (record !== undefined) {
    const mismatch = recordedProcessAlive(record) ? await service.mismatch() : null;
    if (mismatch !== null) {
      log(`${service.name}: recorded process ${record.pid} ${mismatch}; replacing it`);
    } else if (recordedProcessAlive(record)) {
      const ready = await waitUntil(() => service.healthy(), {
        timeoutMs: Math.min(service.readyTimeoutMs, REUSE_PROBE_TIMEOUT_MS),
        abort: () => (recordedProcessAlive(record) ? null : 'exited'),
      });
      if (ready.ok) {
        await service.afterReady();
        return 'reused';
      }
      log(`${service.name}: recorded process ${record.pid} is not healthy (${ready.reason}); restarting it`);
    } else {
      log(`${service.name}: recorded process ${record.pid} has exited; restarting it (log: ${record.logFile})`);
    }
  }
  // Also clears companions left behind by a service that died (e.g. a judge server still on its port).
  await stopService(ctx, service);

  const host = ctx.settings.localHost;
  if (service.port !== null && (await portOpen(host, service.port, PROBE_TIMEOUT_MS))) {
    throw new ServiceStartError(
      `${service.name}: port ${host}:${service.port} is already in use by a process this stack did not start ` +
        `(not in ${records.file}). Stop it, or move this stack with the VALUEDRIFT_*_PORT variables (infra/settings.ts).`,
    );
  }

  service.beforeStart();
  const { cmd, args, env } = service.launch;
  const pid = await spawnDetached({ cmd, args, cwd: REPO_ROOT, env, logFile: service.logFile });
  const started: ServiceRecord = {
    name: service.name,
    pid,
    pgid: pid, // detached: the child leads its own group
    identity: processIdentity(pid) ?? `exited-at-spawn:${Date.now()}`,
    port: service.port,
    startedAt: new Date().toISOString(),
    cmd: [cmd, ...args],
    logFile: service.logFile,
  };
  // Record before waiting, so that a crash of ours here still leaves a record for stackDown.
  records.put(started);
  log(`${service.name}: started pid ${pid}${service.port === null ? '' : ` on ${host}:${service.port}`}, log ${path.relative(REPO_ROOT, service.logFile)}`);

  const ready = await waitUntil(() => service.healthy(), {
    timeoutMs: service.readyTimeoutMs,
    abort: () => (recordedProcessAlive(started) ? null : 'the process exited'),
  });
  if (!ready.ok) {
    const error = startError(service, ready.reason);
    await stopService(ctx, service);
    throw error;
  }
  await service.afterReady();
  return 'started';
}

export interface StackUpOptions {
  workers: boolean;
  judge: boolean;
  log: LogFn;
  /** On failure, stop what this call had started before rethrowing (tests: leave nothing behind). */
  rollbackOnFailure?: boolean;
  /** Another stack than this process's (tests). */
  target?: StackTarget;
}

export interface StackUpResult {
  /** Services this call started (a caller that wants to undo exactly its own work stops these). */
  started: ServiceName[];
  /** Services that were already running and healthy. */
  reused: ServiceName[];
  env: Record<string, string>;
  python: PythonEnv;
}

/**
 * Brings the local stack up (idempotent): Temporal, S3, optionally the judge and the two workers.
 * A recorded service that is alive and healthy is reused, a dead or unhealthy one restarted.
 */
export async function stackUp(opts: StackUpOptions): Promise<StackUpResult> {
  const { log } = opts;
  const target = opts.target ?? defaultTarget();
  const { data } = target;
  // The S3 server's Go build (minutes on an empty build cache) runs while pip works.
  const [py] = await Promise.all([ensurePythonEnv({ log }), ensureS3Server({ log })]);
  for (const dir of [data.dataDir, data.logDir, data.temporalDataDir, data.s3DataDir]) fs.mkdirSync(dir, { recursive: true });

  return withFileLock(data.stackLockFile, { timeoutMs: STACK_LOCK_TIMEOUT_MS, what: 'stack', log }, async () => {
    const ctx = context(target, py, log);
    const wanted = allServices(ctx).filter(
      (s) => (s.name !== SERVICE.judge || opts.judge) && (!WORKERS.has(s.name) || opts.workers),
    );
    const result: StackUpResult = { started: [], reused: [], env: stackEnvironment(target.settings, py, data.workDir), python: py };
    // stack.env first: the workers and the judge read it, and so can a user while we start.
    writeStackEnv(data.stackEnvFile, result.env);
    try {
      for (const service of wanted) {
        const outcome = await upService(ctx, service);
        result[outcome].push(service.name);
      }
    } catch (err) {
      if (opts.rollbackOnFailure === true) {
        for (const service of wanted.filter((s) => result.started.includes(s.name)).reverse()) await stopService(ctx, service);
      }
      throw err;
    }
    return result;
  });
}

/**
 * Stops the recorded services (all, or `only` those named, with their companions), clients before
 * the services they use: their whole process groups, SIGTERM then SIGKILL. Never signals a process
 * it did not start. Returns the names stopped.
 */
export async function stackDown(opts: { only?: readonly string[]; log?: LogFn; target?: StackTarget } = {}): Promise<string[]> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const target = opts.target ?? defaultTarget();
  const { data } = target;
  if (!fs.existsSync(data.stackFile)) return [];
  return withFileLock(data.stackLockFile, { timeoutMs: STACK_LOCK_TIMEOUT_MS, what: 'stack', log }, async () => {
    // Stopping needs no installed Python: only the services' names, order and grace periods.
    const ctx = context(target, pythonEnvPaths(), log);
    const services = allServices(ctx).reverse();
    const only = opts.only === undefined ? undefined : new Set<string>(opts.only);
    const stopped: string[] = [];
    // Records no service owns (an older stack's names): stopped first, as possible clients of the rest.
    const known = new Set<string>(services.flatMap((s) => [s.name, ...s.companions]));
    for (const record of ctx.records.all().filter((r) => !known.has(r.name) && (only === undefined || only.has(r.name)))) {
      await stopRecord(ctx, record, DEFAULT_STOP_GRACE_MS);
      stopped.push(record.name);
    }
    for (const service of services) {
      const recorded = new Set<string>(ctx.records.all().map((r) => r.name));
      // A service asked for goes with its companions; a companion can be asked for alone.
      const asked: string[] = only === undefined || only.has(service.name) ? [service.name, ...service.companions] : service.companions.filter((c) => only.has(c));
      const names = asked.filter((n) => recorded.has(n));
      if (names.length === 0) continue;
      if (names.includes(service.name)) {
        await stopService(ctx, service);
      } else {
        for (const record of ctx.records.all().filter((r) => names.includes(r.name))) await stopRecord(ctx, record, DEFAULT_STOP_GRACE_MS);
      }
      stopped.push(...names);
    }
    if (ctx.records.all().length === 0) fs.rmSync(data.stackEnvFile, { force: true });
    return stopped;
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

/** What the record file lists, with a liveness check of each process. */
export async function stackStatus(opts: { target?: StackTarget } = {}): Promise<ServiceStatus[]> {
  const { settings, data } = opts.target ?? defaultTarget();
  const services = new StackRecord(data.stackFile).all();
  return Promise.all(
    services.map(async (s) => ({
      name: s.name,
      pid: s.pid,
      port: s.port,
      alive: recordedProcessAlive(s),
      listening: s.port === null ? null : await portOpen(settings.localHost, s.port, PROBE_TIMEOUT_MS),
      startedAt: s.startedAt,
      logFile: s.logFile,
    })),
  );
}
