/**
 * One lane of the fault suite: a Temporal dev server of its own (SQLite file kept across a restart),
 * an S3 server of its own (infra/s3server, objects on disk), a proxy in front of each of the S3
 * server and the stack's judge, and a cpu and a gpu worker process (`worker/main.ts`), each in a
 * process group of its own so that it can be SIGKILLed as a crashed node would be. Several lanes run
 * side by side without seeing each other's tasks; trials in one lane run one after the other.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { S3Client } from '@aws-sdk/client-s3';
import { Client, Connection } from '@temporalio/client';
import { SEARCH_ATTRIBUTES } from '../../common/config';
import { ensureS3Server, s3ServerBuildId, s3ServerBinary } from '../../infra/services/s3';
import { temporalBinary } from '../support/workflowEnv';
import { FaultProxy } from './proxy';

const ROOT = path.resolve(__dirname, '..', '..');
export const BUCKET = 'valuedrift-faults';
/** Small, so that a killed judge activity shows the bound at work (the default is 8). */
export const JUDGE_FLUSH_EVERY = 4;

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function waitFor(what: string, ms: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await probe().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what} not ready within ${ms / 1000} s`);
}

export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((r) => child.once('exit', () => r()));
}

/** SIGKILL a child's whole process group (it was started detached) and wait for it. */
export async function killGroup(child: ChildProcess | undefined, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (!child?.pid || child.exitCode !== null || child.signalCode !== null) return;
  const done = exited(child);
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
  await done;
}

export type Role = 'cpu' | 'gpu';

export class Lane {
  temporalPort = 0;
  private temporalUiPort = 0;
  s3Port = 0;
  temporal?: ChildProcess;
  s3server?: ChildProcess;
  readonly s3Proxy: FaultProxy;
  readonly judgeProxy: FaultProxy;
  readonly workers: Record<Role, ChildProcess | undefined> = { cpu: undefined, gpu: undefined };
  /** Extra environment per role (e.g. a short trainer stall bound for the gpu worker). */
  extraEnv: Record<Role, Record<string, string>> = { cpu: {}, gpu: {} };
  client!: Client;
  s3!: S3Client;
  private connection?: Connection;
  private workerCount = 0;
  /** Every worker process this lane started (a stray one would serve tasks a fault meant to take away). */
  private started: ChildProcess[] = [];
  private killing: Promise<void> = Promise.resolve();

  constructor(
    readonly id: string,
    readonly dir: string,
    judgeUpstream: string,
  ) {
    this.s3Proxy = new FaultProxy('http://127.0.0.1:1');
    this.judgeProxy = new FaultProxy(judgeUpstream);
  }

  get workDir(): string {
    return path.join(this.dir, 'work');
  }

  /** The workers' VALUEDRIFT_DATA_ROOT: each trial writes its own datasets under it. */
  get dataRoot(): string {
    return path.join(this.dir, 'data');
  }

  async start(): Promise<void> {
    await fs.mkdir(path.join(this.dir, 'logs'), { recursive: true });
    await fs.mkdir(this.dataRoot, { recursive: true });
    [this.temporalPort, this.temporalUiPort, this.s3Port] = [await freePort(), await freePort(), await freePort()];
    (this.s3Proxy as unknown as { upstream: string }).upstream = `http://127.0.0.1:${this.s3Port}`;
    await Promise.all([this.startTemporal(), this.startS3(), this.s3Proxy.listen(), this.judgeProxy.listen()]);
    this.s3 = new S3Client({
      endpoint: `http://127.0.0.1:${this.s3Port}`,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: 'faults', secretAccessKey: 'faults-secret' },
    });
    await Promise.all([this.startWorker('cpu'), this.startWorker('gpu')]);
  }

  private logFd(name: string): number {
    return openSync(path.join(this.dir, 'logs', `${name}.log`), 'a');
  }

  async startTemporal(): Promise<void> {
    const fd = this.logFd('temporal');
    this.temporal = spawn(
      temporalBinary(),
      [
        'server', 'start-dev',
        '--ip', '127.0.0.1',
        '--port', String(this.temporalPort),
        '--ui-port', String(this.temporalUiPort),
        '--headless',
        '--db-filename', path.join(this.dir, 'temporal.db'),
        '--namespace', 'default',
        '--log-level', 'error',
        ...SEARCH_ATTRIBUTES.flatMap((n) => ['--search-attribute', `${n}=Keyword`]),
      ],
      { stdio: ['ignore', fd, fd], detached: true, shell: false },
    );
    closeSync(fd);
    await waitFor(`temporal (lane ${this.id})`, 90_000, async () => {
      const c = await Connection.connect({ address: `127.0.0.1:${this.temporalPort}`, connectTimeout: 2_000 });
      await c.workflowService.getSystemInfo({});
      await c.close();
      return true;
    });
    // After a restart the first connection is kept: gRPC reconnects it to the same address, and
    // closing it would make a call that the client is still retrying throw from a timer
    // ("Channel has been shut down", uncaught: it killed a matrix run).
    if (this.connection) return;
    this.connection = await Connection.connect({ address: `127.0.0.1:${this.temporalPort}` });
    this.client = new Client({ connection: this.connection, namespace: 'default' });
  }

  /** Stops the Temporal server (SIGTERM: it flushes SQLite) and waits for it to exit. */
  async stopTemporal(): Promise<void> {
    await killGroup(this.temporal, 'SIGTERM');
  }

  async startS3(): Promise<void> {
    await ensureS3Server({ log: (m) => console.error(`[lane ${this.id}] ${m}`) });
    const buildId = s3ServerBuildId();
    await fs.mkdir(path.join(this.dir, 's3'), { recursive: true });
    const fd = this.logFd('s3');
    this.s3server = spawn(
      s3ServerBinary(buildId),
      ['-host', '127.0.0.1', '-port', String(this.s3Port), '-dir', path.join(this.dir, 's3'), '-bucket', BUCKET, '-build-id', buildId],
      { stdio: ['ignore', fd, fd], detached: true, shell: false },
    );
    closeSync(fd);
    await waitFor(`s3 (lane ${this.id})`, 60_000, async () => (await fetch(`http://127.0.0.1:${this.s3Port}/`)).ok);
    // The bucket: created by the server's -bucket flag; a HEAD proves it.
    await waitFor(`bucket (lane ${this.id})`, 10_000, async () => (await fetch(`http://127.0.0.1:${this.s3Port}/${BUCKET}`, { method: 'HEAD' })).ok);
  }

  async stopS3(): Promise<void> {
    await killGroup(this.s3server, 'SIGTERM');
  }

  workerEnv(role: Role): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('TEMPORAL_') && !k.startsWith('VALUEDRIFT_') && !k.startsWith('AWS_')) env[k] = v;
    return {
      ...env,
      TEMPORAL_ADDRESS: `127.0.0.1:${this.temporalPort}`,
      TEMPORAL_NAMESPACE: 'default',
      AWS_ACCESS_KEY_ID: 'faults',
      AWS_SECRET_ACCESS_KEY: 'faults-secret',
      VALUEDRIFT_S3_ENDPOINT: this.s3Proxy.url,
      VALUEDRIFT_S3_BUCKET: BUCKET,
      VALUEDRIFT_S3_REGION: 'us-east-1',
      VALUEDRIFT_S3_FORCE_PATH_STYLE: 'true',
      VALUEDRIFT_JUDGE_BASE_URL: `${this.judgeProxy.url}/v1`,
      VALUEDRIFT_JUDGE_API_KEY: 'local',
      ...(process.env.VALUEDRIFT_JUDGE_MODEL ? { VALUEDRIFT_JUDGE_MODEL: process.env.VALUEDRIFT_JUDGE_MODEL } : {}),
      ...(process.env.VALUEDRIFT_PYTHON ? { VALUEDRIFT_PYTHON: process.env.VALUEDRIFT_PYTHON } : {}),
      VALUEDRIFT_JUDGE_CACHE_FLUSH_EVERY: String(JUDGE_FLUSH_EVERY),
      VALUEDRIFT_WORK_DIR: this.workDir,
      VALUEDRIFT_DATA_ROOT: this.dataRoot,
      VALUEDRIFT_WORKER_ROLE: role,
      HF_HUB_OFFLINE: '1',
      ...this.extraEnv[role],
    };
  }

  /** A worker process of `role` (node with tsx's loader in-process, so the pid is the worker's). */
  async startWorker(role: Role): Promise<ChildProcess> {
    const fd = this.logFd(`worker-${role}-${++this.workerCount}`);
    const child = spawn(process.execPath, ['--import', 'tsx', 'worker/main.ts'], {
      cwd: ROOT,
      env: this.workerEnv(role),
      stdio: ['ignore', fd, fd],
      detached: true,
      shell: false,
    });
    closeSync(fd);
    this.workers[role] = child;
    this.started.push(child);
    return child;
  }

  /**
   * SIGKILLs the worker of `role` (the worker's own process only: a trainer it started runs in a
   * group of its own and is orphaned, as on a crashed node) and starts a fresh one.
   */
  killWorker(role: Role): Promise<void> {
    // One at a time: two overlapping calls must not leave two workers of a role running.
    this.killing = this.killing.then(async () => {
      const w = this.workers[role];
      if (w?.pid && w.exitCode === null && w.signalCode === null) {
        const done = exited(w);
        process.kill(w.pid, 'SIGKILL');
        await done;
      }
      await this.startWorker(role);
    });
    return this.killing;
  }

  async stop(): Promise<void> {
    for (const w of this.started) await killGroup(w);
    await this.connection?.close().catch(() => undefined);
    await this.stopTemporal();
    await this.stopS3();
    await this.s3Proxy.close();
    await this.judgeProxy.close();
    this.s3?.destroy();
  }
}
