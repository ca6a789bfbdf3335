/**
 * No credential leaves the worker: a lineage on real parts (a Temporal dev server of its own, the
 * stack's S3 server and MiniLM judge, a worker process, the real trainer on the tiny model: one SFT
 * stage of 2 steps, evaluated and reported) served by a worker whose environment holds a
 * real-looking value for every secret it may be given. Afterwards every place the run wrote is
 * scanned for each value: every workflow history (exported through the client, payloads decoded),
 * the worker's own output, the worker's scratch folder (trainer logs before upload, checkpoints),
 * every object written to the store during the run (trainer logs, checkpoints, generations,
 * judgments, summaries, drift) and the report.
 *
 * The S3 keys are the ones the local stack is configured with (stack.env): the worker needs them to
 * reach the store. TEMPORAL_API_KEY is not set: with it the worker connects with TLS, which the local
 * dev server does not serve.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';

import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { resetWorkerEnv } from '../../activities/env';
import { bucket, getBytes, s3 } from '../../activities/store';
import { storeKeys, TASK_QUEUES, workflowIds } from '../../common/config';
import { lineageWorkflow, type LineageResult } from '../../workflows';
import { loadStackEnv, stage, startTestServer, testSpec, uniqueName } from '../support/workflowEnv';

const ROOT = path.resolve(__dirname, '..', '..');

/** Random per run, shaped like the real thing (so a redaction that keys on the shape is exercised too). */
function fakeKey(prefix: string, chars: number): string {
  return prefix + randomBytes(chars).toString('base64url').slice(0, chars);
}

let env: TestWorkflowEnvironment;
let workDir: string;
let worker: ChildProcess | undefined;
let secrets: Record<string, string>;

/** Every string in a value, with byte arrays (history payloads) decoded as UTF-8. */
function* texts(value: unknown, seen = new Set<unknown>()): Generator<string> {
  if (typeof value === 'string') yield value;
  else if (value instanceof Uint8Array) yield Buffer.from(value).toString('utf8');
  else if (value !== null && typeof value === 'object' && !seen.has(value)) {
    seen.add(value);
    for (const v of Object.values(value as Record<string, unknown>)) yield* texts(v, seen);
  }
}

/** `where: NAME` for each secret value found in `blob`. */
function leaks(where: string, blob: string | Buffer): string[] {
  const buf = typeof blob === 'string' ? Buffer.from(blob, 'utf8') : blob;
  return Object.entries(secrets)
    .filter(([, value]) => buf.includes(value))
    .map(([name]) => `${where}: ${name}`);
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await filesUnder(p)));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

describe('secrets stay in the worker', () => {
  beforeAll(async () => {
    loadStackEnv();
    resetWorkerEnv();
    if (!process.env.VALUEDRIFT_JUDGE_BASE_URL || !process.env.AWS_SECRET_ACCESS_KEY) throw new Error('no local stack: run npx tsx infra/dev.ts up --no-workers');
    secrets = {
      VALUEDRIFT_JUDGE_API_KEY: fakeKey('sk-judge-', 40),
      OPENAI_API_KEY: fakeKey('sk-proj-', 48),
      HF_TOKEN: fakeKey('hf_', 34),
      WANDB_API_KEY: randomBytes(20).toString('hex'),
      // What the stack is configured with: the store refuses nothing, but these are what reach it.
      AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID ?? '',
      AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY,
    };
    workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-secrets-e2e-'));
    env = await startTestServer();
  }, 120_000);

  afterAll(async () => {
    if (worker && worker.exitCode === null && worker.signalCode === null) {
      const exited = new Promise((r) => worker?.once('exit', r));
      worker.kill('SIGKILL');
      await exited;
    }
    await env?.teardown();
    if (workDir) await fs.rm(workDir, { recursive: true, force: true });
  });

  it('a lineage leaves no key in histories, logs, stored objects or the report', async () => {
    const started = new Date(Date.now() - 2_000);
    const name = uniqueName('e2e-secrets');
    const tiny = { per_device_train_batch_size: 2, global_batch_size: 2, max_length: 96 };
    const spec = testSpec(name, [stage.sft('sft', { hyperparameters: { ...tiny, max_steps: 2 } })]);
    (spec.evaluation as Record<string, unknown>).maxNewTokens = 8;
    (spec.evaluation as Record<string, unknown>).judge = { model: process.env.VALUEDRIFT_JUDGE_MODEL ?? 'minilm-stance', concurrency: 4 };

    const workerLog = path.join(workDir, 'worker.log');
    const fd = openSync(workerLog, 'a');
    worker = spawn(process.execPath, ['--import', 'tsx', 'worker/main.ts'], {
      cwd: ROOT,
      env: {
        ...process.env,
        ...secrets,
        TEMPORAL_ADDRESS: env.connection.options.address,
        TEMPORAL_NAMESPACE: env.namespace ?? 'default',
        VALUEDRIFT_WORKER_ROLE: 'all',
        VALUEDRIFT_WORK_DIR: path.join(workDir, 'work'),
        HF_HUB_OFFLINE: '1',
      },
      stdio: ['ignore', fd, fd],
      shell: false,
    });
    closeSync(fd);
    // The keys really are in the worker's environment (Linux: its /proc environ).
    const environ = readFileSync(`/proc/${worker.pid}/environ`, 'utf8').split('\0');
    for (const [k, v] of Object.entries(secrets)) expect(environ).toContain(`${k}=${v}`);

    const handle = await env.client.workflow.start(lineageWorkflow, { taskQueue: TASK_QUEUES.workflows, workflowId: workflowIds.lineage(name), args: [spec] });
    const result = (await handle.result()) as LineageResult;
    expect(result.stages.map((s) => [s.stageId, s.totalSteps])).toEqual([['sft', 2]]);
    const found: string[] = [];

    // 1. Every workflow history on this server (the lineage's, its stage's and evaluations').
    let histories = 0;
    for await (const wf of env.client.workflow.list()) {
      const history = await env.client.workflow.getHandle(wf.workflowId, wf.runId).fetchHistory();
      histories++;
      found.push(...leaks(`history ${wf.workflowId}`, [...texts(history)].join('\n')));
    }
    expect(histories).toBeGreaterThanOrEqual(4); // lineage, stage, two evaluations at least
    expect(await env.client.workflow.getHandle(workflowIds.stage(name, 'sft')).fetchHistory()).toBeDefined();

    // 2. The worker's output and its scratch folder.
    found.push(...leaks('worker log', await fs.readFile(workerLog)));
    for (const file of await filesUnder(path.join(workDir, 'work'))) found.push(...leaks(path.relative(workDir, file), await fs.readFile(file)));

    // 3. Every object the run wrote to the store, trainer logs and the report among them.
    const written: string[] = [];
    let token: string | undefined;
    do {
      const page = await s3().send(new ListObjectsV2Command({ Bucket: bucket(), ContinuationToken: token }));
      for (const o of page.Contents ?? []) if (o.Key && o.LastModified && o.LastModified >= started) written.push(o.Key);
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
    expect(written.some((k) => k.startsWith(storeKeys.trainerLogsPrefix(name, 'sft')))).toBe(true);
    expect(written).toContain(storeKeys.reportPage(name));
    expect(written.some((k) => k.startsWith(`lineages/${name}/sft/checkpoints/`))).toBe(true);
    for (const key of written) found.push(...leaks(`s3://${bucket()}/${key}`, await getBytes(`s3://${bucket()}/${key}`)));
    found.push(...leaks('report', await getBytes(result.report.uri)));

    expect(found).toEqual([]);

    // The scan itself finds a key where there is one.
    expect(leaks('control', `x${secrets.OPENAI_API_KEY}y`)).toEqual(['control: OPENAI_API_KEY']);
  }, 1_200_000);
});
