/**
 * The local stack as `npm test` leaves it for the other tests: Temporal answers with the search
 * attributes registered, the bucket exists and stores bytes, stack.json names live processes, and
 * bringing the stack up again reuses them.
 *
 * Run alone (`npx vitest run test/infra`) it starts the stack itself and stops what it started.
 * It uses the stack infra/settings.ts names: a second stack beside the first with, e.g.,
 * `VALUEDRIFT_DATA_DIR=/tmp/stack2 VALUEDRIFT_TEMPORAL_PORT=7300 VALUEDRIFT_TEMPORAL_UI_PORT=8300
 * VALUEDRIFT_S3_PORT=9300 VALUEDRIFT_JUDGE_PORT=8388 npx vitest run test/infra`.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';

import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { SEARCH_ATTRIBUTES } from '../../common/config';
import { DATA } from '../../infra/paths';
import { SERVICE } from '../../infra/services/service';
import { settings } from '../../infra/settings';
import { stackDown, stackStatus, stackUp } from '../../infra/stack';
import { loadStackEnv } from '../../infra/stackEnv';

const quiet = (): void => undefined;

/** Whether the judge is part of the running stack (it is skipped while its code is missing). */
async function judgeRunning(): Promise<boolean> {
  return (await stackStatus()).some((s) => s.name === SERVICE.judge && s.alive);
}

describe('local stack', () => {
  let startedHere: string[] = [];
  let env: Record<string, string>;
  let connection: Connection | undefined;
  let s3: S3Client;

  beforeAll(async () => {
    // Under `npm test` everything is already up and this reuses it.
    const up = await stackUp({ workers: false, judge: await judgeRunning(), log: quiet });
    startedHere = up.started;
    env = loadStackEnv();
    s3 = new S3Client({
      endpoint: env.VALUEDRIFT_S3_ENDPOINT,
      region: env.VALUEDRIFT_S3_REGION,
      forcePathStyle: env.VALUEDRIFT_S3_FORCE_PATH_STYLE === 'true',
      credentials: { accessKeyId: env.AWS_ACCESS_KEY_ID ?? '', secretAccessKey: env.AWS_SECRET_ACCESS_KEY ?? '' },
    });
  });

  afterAll(async () => {
    await connection?.close();
    s3?.destroy();
    if (startedHere.length > 0) await stackDown({ only: startedHere, log: quiet });
  });

  it('writes stack.env with everything a worker needs', () => {
    for (const key of [
      'TEMPORAL_ADDRESS',
      'TEMPORAL_NAMESPACE',
      'TEMPORAL_UI_URL',
      'VALUEDRIFT_S3_ENDPOINT',
      'VALUEDRIFT_S3_BUCKET',
      'VALUEDRIFT_S3_REGION',
      'VALUEDRIFT_S3_FORCE_PATH_STYLE',
      'AWS_ACCESS_KEY_ID',
      'AWS_SECRET_ACCESS_KEY',
      'VALUEDRIFT_JUDGE_BASE_URL',
      'VALUEDRIFT_JUDGE_MODEL',
      'VALUEDRIFT_JUDGE_API_KEY',
      'VALUEDRIFT_PYTHON',
      'VALUEDRIFT_TEMPORAL_BIN',
      'VALUEDRIFT_TEST_SERVER_BIN',
      'VALUEDRIFT_WORK_DIR',
    ]) {
      expect(env[key], key).toBeTruthy();
    }
    for (const key of ['VALUEDRIFT_PYTHON', 'VALUEDRIFT_TEMPORAL_BIN', 'VALUEDRIFT_TEST_SERVER_BIN'] as const) {
      expect(fs.existsSync(env[key] ?? ''), `${key}=${env[key]} exists`).toBe(true);
    }
    // The addresses of the stack the settings name, and its own data directory.
    expect(env.TEMPORAL_ADDRESS).toBe(settings.temporalAddress);
    expect(env.VALUEDRIFT_S3_ENDPOINT).toBe(settings.s3Endpoint);
    expect(env.VALUEDRIFT_JUDGE_BASE_URL).toBe(settings.judgeBaseUrl);
    expect(env.VALUEDRIFT_WORK_DIR).toBe(DATA.workDir);
  });

  it('Temporal answers and has the lineage search attributes', async () => {
    connection = await Connection.connect({ address: env.TEMPORAL_ADDRESS, connectTimeout: 10_000 });
    const info = await connection.workflowService.getSystemInfo({});
    expect(info.serverVersion).toBeTruthy();
    const attrs = await connection.operatorService.listSearchAttributes({ namespace: env.TEMPORAL_NAMESPACE });
    const custom = Object.keys(attrs.customAttributes ?? {});
    expect(custom).toEqual(expect.arrayContaining([...SEARCH_ATTRIBUTES]));
  });

  it('the bucket exists and round-trips an object', async () => {
    const Bucket = env.VALUEDRIFT_S3_BUCKET;
    await s3.send(new HeadBucketCommand({ Bucket }));
    const Key = `test/infra/${randomUUID()}.txt`;
    const body = `round trip ${Key}`;
    await s3.send(new PutObjectCommand({ Bucket, Key, Body: body, ContentType: 'text/plain' }));
    try {
      const got = await s3.send(new GetObjectCommand({ Bucket, Key }));
      expect(await got.Body?.transformToString()).toBe(body);
    } finally {
      await s3.send(new DeleteObjectCommand({ Bucket, Key }));
    }
  });

  it('stack.json records live processes for temporal and s3', async () => {
    expect(fs.existsSync(DATA.stackFile)).toBe(true);
    const status = await stackStatus();
    for (const name of [SERVICE.temporal, SERVICE.s3]) {
      const service = status.find((s) => s.name === name);
      expect(service, `${name} recorded`).toBeDefined();
      expect(service?.alive, `${name} pid ${service?.pid} alive`).toBe(true);
      expect(service?.listening, `${name} port ${service?.port} listening`).toBe(true);
      expect(service?.logFile, `${name} logs in its data directory`).toBe(DATA.logFileFor(name));
    }
    for (const service of status) expect(service.alive, `${service.name} pid ${service.pid} alive`).toBe(true);
  });

  it('a running judge serves the model stack.env names (VALUEDRIFT_LOCAL_JUDGE, default minilm-stance)', async () => {
    expect(env.VALUEDRIFT_JUDGE_MODEL).toBe(settings.judgeModel);
    if (!(await judgeRunning())) return; // judge not part of this stack
    const res = await fetch(`${env.VALUEDRIFT_JUDGE_BASE_URL}/models`, { signal: AbortSignal.timeout(10_000) });
    const body = (await res.json()) as { data?: Array<{ id?: string }> };
    expect(body.data?.map((m) => m.id)).toContain(settings.judgeModel);
  });

  it('stackUp again reuses the running processes (same pids)', async () => {
    const judge = await judgeRunning();
    const before = new Map((await stackStatus()).map((s) => [s.name, s.pid]));
    const again = await stackUp({ workers: false, judge, log: quiet });
    expect(again.started).toEqual([]);
    expect(again.reused).toEqual(expect.arrayContaining([SERVICE.temporal, SERVICE.s3]));
    const after = new Map((await stackStatus()).map((s) => [s.name, s.pid]));
    expect(after).toEqual(before);
  });
});
