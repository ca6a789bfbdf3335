/**
 * `lineage reevaluate` through the real CLI against a real Temporal server (the dev server binary)
 * and the stand-in lineage workflow of the live CLI tests: the original's spec is read from its
 * workflow's input, the derived lineage is started under its predictable name with the overrides
 * and `derivedFrom`, a second call attaches to it and a call after it finished reports it; an
 * original that is unknown, running, terminated or has no spec is refused naming it (exit 1), and a
 * command line that changes nothing is refused (exit 2).
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { ArtifactRef } from '../../common/contracts';
import { TASK_QUEUES, workflowIds } from '../../common/config';
import { validateLineageSpec } from '../../common/spec';
import { runningLineageSpec } from '../../worker/lineageClient';
import { REEVAL_MARK } from '../../worker/reevaluate';
import type { LineageResult } from '../../workflows';
import { uniqueName } from '../support/workflowEnv';
import { finishSignal } from './fixtures/fakeLineage';
import { ROOT, useLiveCli, type Run } from './fixtures/liveCli';

const cli = useLiveCli('vd-cli-reeval-');

async function demoSpec(name: string): Promise<Record<string, any> & { name: string }> {
  const demo = JSON.parse(await fs.readFile(path.join(ROOT, 'specs', 'demo.json'), 'utf8')) as Record<string, unknown>;
  return { ...demo, name };
}

function start(spec: { name: string }): Promise<unknown> {
  return cli.env.client.workflow.start('lineageWorkflow', { taskQueue: TASK_QUEUES.workflows, workflowId: workflowIds.lineage(spec.name), args: [spec] });
}

async function finish(name: string): Promise<LineageResult> {
  const report: ArtifactRef = { uri: `s3://valuedrift/lineages/${name}/report/index.html`, sha256: 'a'.repeat(64), bytes: 1 };
  const handle = cli.env.client.workflow.getHandle(workflowIds.lineage(name));
  await handle.signal(finishSignal, { lineage: name, report, stages: [] });
  return (await handle.result()) as LineageResult;
}

function expectFailure(run: Run, code: number, message: string): void {
  expect(run.stdout).toBe('');
  expect(run.stderr).toBe(`error: ${message}\n`);
  expect(run.code).toBe(code);
}

describe('lineage reevaluate on a live server', () => {
  it('starts the derived lineage once, attaches, reports it when done; refuses what it cannot re-evaluate', async () => {
    const name = uniqueName('cli-reeval');
    const original = await demoSpec(name);

    // Unknown and still-running originals are refused, naming them.
    const ghost = uniqueName('cli-ghost');
    expectFailure(await cli.lineage(['reevaluate', ghost, '--judge', 'x']), 1, `no lineage ${ghost} to re-evaluate (no workflow valuedrift/${ghost})`);
    await start(original);
    expectFailure(
      await cli.lineage(['reevaluate', name, '--judge', 'smollm2-judge']),
      1,
      `lineage ${name} has not finished (valuedrift/${name} is still running); re-evaluate it once it is done`,
    );
    await finish(name);

    // Nothing to change: no option, or only the values the original already has (exit 2, nothing started).
    expectFailure(await cli.lineage(['reevaluate', name]), 2, 'lineage reevaluate: nothing to change: give --judge, --eval-set or --samples (see: lineage reevaluate --help)');
    expectFailure(
      await cli.lineage(['reevaluate', name, '--judge', 'minilm-stance', '--samples', '3']),
      2,
      `lineage reevaluate: nothing to change: lineage ${name} was already evaluated with --judge minilm-stance, --samples 3`,
    );
    expectFailure(await cli.lineage(['reevaluate', name, '--samples', '0']), 2, 'lineage reevaluate: --samples must be an integer from 1 to 100 (got "0")');

    // A change starts the derived lineage under its predictable name, with the overrides and derivedFrom.
    const first = await cli.lineage(['reevaluate', name, '--judge', 'smollm2-judge', '--samples', '4']);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    const m = new RegExp(`^started: (valuedrift/${name}${REEVAL_MARK}[0-9a-f]{10})\\n`).exec(first.stdout);
    expect(m, first.stdout).not.toBeNull();
    const derivedId = m?.[1] as string;
    const derivedName = derivedId.slice('valuedrift/'.length);
    expect(first.stdout).toContain(`derived from: ${name} (evaluation.judge.model: minilm-stance → smollm2-judge; evaluation.generationsPerPrompt: 3 → 4)\n`);
    expect(first.stdout).toMatch(new RegExp(`ui: http.*/workflows/${encodeURIComponent(derivedId)}\\n$`));

    const derived = await runningLineageSpec(cli.env.client, derivedId);
    const v = validateLineageSpec(original);
    if (!v.ok || !derived) throw new Error('specs unreadable');
    expect(derived.name).toBe(derivedName);
    expect(derived.derivedFrom).toEqual({
      lineage: name,
      changes: [
        { field: 'evaluation.judge.model', from: 'minilm-stance', to: 'smollm2-judge' },
        { field: 'evaluation.generationsPerPrompt', from: 3, to: 4 },
      ],
    });
    expect(derived.evaluation).toEqual({ ...v.spec.evaluation, generationsPerPrompt: 4, judge: { ...v.spec.evaluation.judge, model: 'smollm2-judge' } });
    expect(derived.stages).toEqual(v.spec.stages);
    expect(derived.datasets).toEqual(v.spec.datasets);
    expect(derived.base).toEqual(v.spec.base);

    // Again (options in another order, the original by workflow ID): the same lineage, attached to.
    const again = await cli.lineage(['reevaluate', '--samples', '4', `valuedrift/${name}`, '--judge', 'smollm2-judge']);
    expect(again.stderr).toBe('');
    expect(again.stdout.split('\n')[0]).toBe(`already running: ${derivedId}`);
    // Other overrides: another derived lineage.
    const other = await cli.lineage(['reevaluate', name, '--eval-set', 'file:test/fixtures/eval-small.jsonl']);
    expect(other.code).toBe(0);
    const otherId = /^started: (\S+)\n/.exec(other.stdout)?.[1];
    expect(otherId).toMatch(new RegExp(`^valuedrift/${name}${REEVAL_MARK}[0-9a-f]{10}$`));
    expect(otherId).not.toBe(derivedId);
    expect(other.stdout).toContain(`derived from: ${name} (datasets.demo-eval.uri: file:data/demo/eval.jsonl → file:test/fixtures/eval-small.jsonl)`);
    await cli.env.client.workflow.getHandle(otherId as string).terminate('test over');

    // Once the derived lineage is done, the same call reports it instead of running it again.
    const done = await finish(derivedName);
    const after = await cli.lineage(['reevaluate', name, '--judge', 'smollm2-judge', '--samples', '4']);
    expect(after.stderr).toBe('');
    expect(after.code).toBe(0);
    expect(after.stdout).toContain(`already done: ${derivedId}\n`);
    expect(after.stdout).toContain(`report: ${done.report.uri} (npm run lineage -- report ${derivedName})\n`);
    const runs = await cli.env.client.workflow.list({ query: `WorkflowId = '${derivedId}'` });
    let count = 0;
    for await (const _ of runs) count++;
    expect(count).toBe(1);
  }, 240_000);

  it('refuses a terminated original and one whose input is not a spec, naming them', async () => {
    const stopped = uniqueName('cli-stopped');
    await start(await demoSpec(stopped));
    await cli.env.client.workflow.getHandle(workflowIds.lineage(stopped)).terminate('test');
    expectFailure(
      await cli.lineage(['reevaluate', stopped, '--judge', 'x']),
      1,
      `lineage ${stopped} has not finished (valuedrift/${stopped} is terminated); only a finished lineage can be re-evaluated`,
    );
    const specless = uniqueName('cli-specless');
    await start({ name: specless });
    await finish(specless);
    expectFailure(
      await cli.lineage(['reevaluate', specless, '--judge', 'x']),
      1,
      `lineage ${specless} has no stored spec: the input of valuedrift/${specless} is not a valid lineage spec`,
    );
  }, 120_000);
});
