/**
 * The one interface every service of the local stack implements (Temporal, S3, the judge, the
 * workers), and what they are given to build themselves. The lifecycle that starts, reuses and
 * stops them in dependency order is infra/stack.ts; each service's own module says how to launch
 * it, how to tell it is healthy, how long it gets to stop and where it logs.
 */
import type { DataPaths } from '../paths';
import type { LogFn } from '../proc';
import type { PythonEnv } from '../python';
import type { InfraSettings } from '../settings';
import type { StackRecord } from '../stackRecord';

/** Service names as recorded in `stack.json` and used for `logs/<name>.log`. */
export const SERVICE = {
  temporal: 'temporal',
  s3: 's3',
  judge: 'judge',
  /** The judge server (stance_server.py, either backend) the judge process starts in a process group of its own. */
  judgeServer: 'judge-server',
  workerCpu: 'worker-cpu',
  workerGpu: 'worker-gpu',
} as const;
export type ServiceName = (typeof SERVICE)[keyof typeof SERVICE];

/** Between SIGTERM and SIGKILL, unless a service says otherwise. */
export const DEFAULT_STOP_GRACE_MS = 10_000;
/** A single probe of a health check. */
export const PROBE_TIMEOUT_MS = 3_000;

/** What a service is built from. */
export interface ServiceContext {
  settings: InfraSettings;
  data: DataPaths;
  py: PythonEnv;
  records: StackRecord;
  log: LogFn;
}

export interface LocalService {
  readonly name: ServiceName;
  /** The TCP port it listens on (checked free before a start), or null (workers). */
  readonly port: number | null;
  /** Where its stdout and stderr go. */
  readonly logFile: string;
  /** How to start it: this command, detached in a process group of its own. */
  readonly launch: { cmd: string; args: string[]; env: NodeJS.ProcessEnv };
  /** How long a fresh start may take to become healthy. */
  readonly readyTimeoutMs: number;
  /** How to stop it: SIGTERM to its process group, SIGKILL after this long. */
  readonly stopGraceMs: number;
  /** Records of processes it starts in process groups of their own: stopped right after it. */
  readonly companions: readonly ServiceName[];
  /** One quick probe: is the service answering? */
  healthy(): Promise<boolean>;
  /**
   * One quick probe of a recorded, live service: does it answer as something other than what this
   * stack wants now (e.g. the judge of the other kind)? Says what, so that it is replaced at once.
   */
  mismatch(): Promise<string | null>;
  /** Runs right before the spawn (clears what a previous run of the service left). */
  beforeStart(): void;
  /** Idempotent setup once healthy (search attributes, bucket). Runs on reuse too. */
  afterReady(): Promise<void>;
}

/** The parts most services leave as they are. */
export const SERVICE_DEFAULTS = {
  stopGraceMs: DEFAULT_STOP_GRACE_MS,
  companions: [] as readonly ServiceName[],
  mismatch: (): Promise<string | null> => Promise.resolve(null),
  beforeStart: (): void => undefined,
  afterReady: (): Promise<void> => Promise.resolve(),
};

/** The environment for our children: ours, without variables that would point the tools elsewhere. */
export function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(env)) {
    // A researcher's Temporal Cloud profile or API key must not leak into the local tools.
    if (key.startsWith('TEMPORAL_')) delete env[key];
  }
  return { ...env, ...extra };
}

/** Whether an HTTP GET answers (any status, or only 2xx with `okOnly`) within the probe timeout. */
export async function httpAnswers(url: string, okOnly: boolean): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
    await res.arrayBuffer();
    return okOnly ? res.ok : true;
  } catch {
    return false;
  }
}
