/**
 * `lineage start` of a lineage that is already running, against a real Temporal server (the dev
 * server binary from the project's Python env) and the stand-in lineage workflow of the live CLI
 * tests: the same spec (even written differently: a default left out) attaches; a different spec is
 * refused with exit 1, naming where it differs, and the running lineage keeps its own input.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TASK_QUEUES, workflowIds } from '../../common/config';
import { validateLineageSpec } from '../../common/spec';
import { runningLineageSpec, specDifferences } from '../../worker/lineageClient';
import { loadStackEnv, startTestServer, uniqueName } from '../support/workflowEnv';

const ROOT = path.resolve(__dirname, '..', '..');
const TSX = path.join(ROOT, 'node_modules', '.bin', 'tsx');

let env: TestWorkflowEnvironment;
let worker: Worker;
let running: Promise<void>;
let dir: string;

function lineage(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const childEnv: NodeJS.ProcessEnv = {
    ...process.env,
    TEMPORAL_ADDRESS: env.connection.options.address,
    TEMPORAL_NAMESPACE: env.namespace ?? 'default',
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  };
  return new Promise((resolve) => {
    execFile(TSX, ['worker/cli.ts', ...args], { cwd: ROOT, env: childEnv, timeout: 90_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
  });
}

async function writeSpec(file: string, spec: Record<string, unknown>): Promise<string> {
  const p = path.join(dir, file);
  await fs.writeFile(p, JSON.stringify(spec));
  return p;
}

beforeAll(async () => {
  loadStackEnv();
  Runtime.install({ logger: new DefaultLogger('WARN') });
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-cli-conflict-'));
  env = await startTestServer();
  worker = await Worker.create({
    connection: env.nativeConnection,
    namespace: env.namespace ?? 'default',
    taskQueue: TASK_QUEUES.workflows,
    workflowsPath: path.join(__dirname, 'fixtures', 'fakeLineage.ts'),
  });
  running = worker.run();
});

afterAll(async () => {
  worker?.shutdown();
  await running;
  await env?.teardown();
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

describe('lineage start of a running lineage', () => {
  it('attaches with the same spec, refuses a different one naming the difference', async () => {
    const name = uniqueName('cli-conflict');
    const workflowId = workflowIds.lineage(name);
    const demo = JSON.parse(await fs.readFile(path.join(ROOT, 'specs', 'demo.json'), 'utf8')) as Record<string, unknown>;
    const original: Record<string, any> = { ...demo, name };
    const first = await lineage(['start', await writeSpec('a.json', original)]);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(new RegExp(`^started: ${workflowId}\\n`));

    // The same spec written differently (a default left out): the same lineage, so attach.
    const { seed: _seed, ...withoutSeed } = original;
    expect(original.seed).toBe(42); // the default
    const same = await lineage(['start', await writeSpec('same.json', withoutSeed)]);
    expect(same.stderr).toBe('');
    expect(same.code).toBe(0);
    expect(same.stdout).toMatch(new RegExp(`^already running: ${workflowId}\\n`));

    // A different learning rate and one more topic: refused, naming both, nothing printed on stdout.
    const changed = structuredClone(original);
    changed.stages[1].hyperparameters.learning_rate = 1e-4;
    changed.evaluation.topics = { ...changed.evaluation.topics, extra: 'an extra topic' };
    const other = await lineage(['start', await writeSpec('changed.json', changed)]);
    expect(other.code).toBe(1);
    expect(other.stdout).toBe('');
    expect(other.stderr).toContain(`error: lineage ${name} is already running (${workflowId}) with a different spec; the new spec was not started`);
    expect(other.stderr).toContain('stages[1].hyperparameters.learning_rate');
    expect(other.stderr).toContain('evaluation.topics.extra');
    expect(other.stderr.trim().split('\n')).toHaveLength(1);

    // The running lineage still has the spec it was started with.
    const v = validateLineageSpec(original);
    if (!v.ok) throw new Error('demo spec invalid');
    const kept = await runningLineageSpec(env.client, workflowId);
    expect(kept).toBeDefined();
    expect(specDifferences(kept, v.spec)).toEqual([]);

    await env.client.workflow.getHandle(workflowId).terminate('test over');
  }, 120_000);
});

describe('specDifferences', () => {
  it('names changed, added and removed fields and array lengths', () => {
    expect(specDifferences({ a: 1, b: { c: [1, 2] }, d: 'x' }, { a: 1, b: { c: [1, 3] }, e: 'y' })).toEqual(['b.c[1]', 'd', 'e']);
    expect(specDifferences({ s: [1] }, { s: [1, 2] })).toEqual(['s (1 vs 2 entries)']);
    expect(specDifferences({ a: { b: 1 } }, { a: { b: 1 } })).toEqual([]);
    expect(specDifferences({ a: [] }, { a: {} })).toEqual(['a']);
  });
});
