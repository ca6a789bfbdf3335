/**
 * `lineage start` of a lineage that is already running, against a real Temporal server (the dev
 * server binary from the project's Python env) and the stand-in lineage workflow of the live CLI
 * tests: the same spec (even written differently: a default left out) attaches; a different spec is
 * refused with exit 1, naming where it differs, and the running lineage keeps its own input.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { workflowIds } from '../../common/config';
import { validateLineageSpec } from '../../common/spec';
import { runningLineageSpec, specDifferences } from '../../worker/lineageClient';
import { uniqueName } from '../support/workflowEnv';
import { ROOT, useLiveCli } from './fixtures/liveCli';

const cli = useLiveCli('vd-cli-conflict-');
const lineage = cli.lineage;

async function writeSpec(file: string, spec: Record<string, unknown>): Promise<string> {
  const p = path.join(cli.dir, file);
  await fs.writeFile(p, JSON.stringify(spec));
  return p;
}

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
    const kept = await runningLineageSpec(cli.env.client, workflowId);
    expect(kept).toBeDefined();
    expect(specDifferences(kept, v.spec)).toEqual([]);

    await cli.env.client.workflow.getHandle(workflowId).terminate('test over');
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
