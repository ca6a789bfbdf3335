/**
 * The fast subset of the fault suite, in `npm test` (alone: `npm run test:faults:fast`, after
 * `npm run dev:up`). `npm run test:faults` runs the whole matrix. This file runs
 * one trial of the cheapest fault on real parts (a lane's own Temporal dev server and S3 server,
 * cpu and gpu worker processes, the real trainer on the tiny model, the stack's local judge): the
 * Temporal server stopped and restarted on its SQLite file after checkpoint 2, the same workers going
 * on. (A killed worker costs a heartbeat timeout, a minute or more: test/e2e/lineage.e2e.test.ts
 * covers one in npm test, the matrix covers the rest.) The trial's checks (lineage completes, manifests verify, nothing missing or duplicated, judge
 * repeats and lost training bounded) must pass; then a control corrupts one checkpoint file and one
 * judgment object in the store and the same checks must catch both.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import * as fs from 'node:fs/promises';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadStackEnv } from '../support/workflowEnv';
import { BUCKET, Lane } from './lane';
import { checkTrial, FAULTS, runTrial, STEPS, type TrialResult } from './trial';

const lanes: Lane[] = [];
let base: string;

beforeAll(async () => {
  loadStackEnv();
  const judge = process.env.VALUEDRIFT_JUDGE_BASE_URL;
  if (!judge) throw new Error('no local judge: run npx tsx infra/dev.ts up --no-workers');
  base = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-faults-fast-'));
  for (const id of ['a']) lanes.push(new Lane(id, path.join(base, id), new URL(judge).origin));
  await Promise.all(lanes.map((l) => l.start()));
}, 180_000);

afterAll(async () => {
  await Promise.all(lanes.map((l) => l.stop().catch(() => undefined)));
  if (base) await fs.rm(base, { recursive: true, force: true });
});

const fault = (id: string) => FAULTS.find((f) => f.id === id)!;

describe('fault injection (fast subset)', () => {
  it('survives a Temporal restart mid-lineage; the checks catch a corrupt store', async () => {
    const [a] = lanes as [Lane];
    const restart = await runTrial(a, fault('temporal-restart'), 1);
    expect(restart.failures, `${restart.fault}: ${restart.detail}`).toEqual([]);
    expect(restart.detail).toMatch(/^down \d/);
    const kill = restart;

    // Control: the same checks fail on a corrupt checkpoint file and a judgment object with a row dropped.
    const manifestKey = `lineages/${kill.lineage}/sft/checkpoints/step-${STEPS[0]}/manifest.json`;
    const { GetObjectCommand } = await import('@aws-sdk/client-s3');
    const read = async (key: string) => Buffer.from(await ((await a.s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }))).Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray());
    const manifest = JSON.parse((await read(manifestKey)).toString('utf8')) as { base?: string; files: Array<{ path: string }> };
    const fileKey = `${manifestKey.slice(0, -'/manifest.json'.length)}${manifest.base ? `/${manifest.base}` : ''}/${manifest.files[0]!.path}`;
    await a.s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: fileKey, Body: Buffer.from('corrupt') }));
    const pointer = JSON.parse((await read(`lineages/${kill.lineage}/sft/evals/step-${STEPS[0]}/evaluation.json`)).toString('utf8')) as { judgments: { uri: string } };
    const judgmentsKey = pointer.judgments.uri.replace(/^s3:\/\/[^/]+\//, '');
    const rows = (await read(judgmentsKey)).toString('utf8').split('\n').filter(Boolean);
    await a.s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: judgmentsKey, Body: rows.slice(1).join('\n') + '\n' }));
    const again: TrialResult = { ...kill, failures: [] };
    const result = await a.client.workflow.getHandle(`valuedrift/${kill.lineage}`).result();
    await checkTrial(a, kill.lineage, result as never, undefined, again);
    expect(again.failures.join('\n')).toMatch(/does not verify/);
    expect(again.failures.join('\n')).toMatch(/judgments missing/);
  }, 1_200_000);
});
