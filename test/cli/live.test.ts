/**
 * The CLI against a real Temporal server (the dev server binary from the project's Python env):
 * `start`, `status [--json]`, `report [--json]` and `export-history` spawned as a user would run
 * them, talking to stand-in lineage and stage workflows (test/cli/fixtures/fakeLineage.ts) that
 * answer the real queries with fixed progress. `report` also needs the store: the local S3 server
 * of the stack (`npm test` starts it; `.data/stack.env` says where it is).
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { putBytes } from '../../activities/store';
import { workflowIds } from '../../common/config';
import type { LineageResult } from '../../workflows';
import type { ProgressView, ReportJson } from '../../worker/lineageClient';
import { uniqueName } from '../support/workflowEnv';
import { ROOT, useLiveCli } from './fixtures/liveCli';
import { FAKE_STAGE_PROGRESS, finishSignal } from './fixtures/fakeLineage';

const cli = useLiveCli('vd-cli-live-');
const lineage = cli.lineage;

async function specFile(name: string): Promise<string> {
  const spec = JSON.parse(await fs.readFile(path.join(ROOT, 'specs', 'demo.json'), 'utf8')) as Record<string, unknown>;
  const file = path.join(cli.dir, `${name}.json`);
  await fs.writeFile(file, JSON.stringify({ ...spec, name }));
  return file;
}

describe('lineage CLI on a live Temporal server', () => {
  it('start, start again, status --json, status, export-history', async () => {
    const name = uniqueName('cli');
    const file = await specFile(name);
    const workflowId = workflowIds.lineage(name);

    const first = await lineage(['start', file]);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(new RegExp(`^started: ${workflowId}\\nui: http.*/workflows/${encodeURIComponent(workflowId)}\\n$`));
    const again = await lineage(['start', file]);
    expect(again.stdout).toMatch(new RegExp(`^already running: ${workflowId}\\n`));

    // The stage's progress query answers once the child has started.
    const handle = cli.env.client.workflow.getHandle(workflowIds.stage(name, 'sft'));
    for (let i = 0; i < 100; i++) {
      const ok = await handle.describe().then(
        () => true,
        () => false,
      );
      if (ok) break;
      await new Promise((r) => setTimeout(r, 100));
    }

    const asJson = await lineage(['status', name, '--json']);
    expect(asJson.stderr).toBe('');
    expect(asJson.code).toBe(0);
    const view = JSON.parse(asJson.stdout) as ProgressView;
    expect(view).toMatchObject({ workflowId, lineage: name, status: 'running', base: { evaluated: true } });
    // sft: the lineage says "running"; the stage's own query supplies phase, steps, checkpoints.
    expect(view.stages.map((s) => [s.id, s.status, s.totalSteps, s.checkpoints, s.evaluated, s.latestLoss, s.step])).toEqual([
      ['sft', FAKE_STAGE_PROGRESS.status, 60, [20, 40], [0, 20], 1.5, null],
      ['dpo', 'waiting', 0, [], [], null, null],
    ]);

    const text = await lineage(['status', workflowId]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`^lineage ${name}: running {3}base evaluated: yes\\n`));
    expect(text.stdout).toMatch(/^ {2}sft\s+sft\s+evaluating\s+-\/60\s+1\.5000\s+20,40\s+0,20$/m);

    const historyFile = path.join(cli.dir, 'history.json');
    const exported = await lineage(['export-history', name, historyFile]);
    expect(exported.code).toBe(0);
    const history = JSON.parse(await fs.readFile(historyFile, 'utf8')) as { events: Array<{ eventType: string }> };
    expect(history.events[0]?.eventType).toMatch(/WORKFLOW_EXECUTION_STARTED/);
    expect(exported.stdout).toBe(`wrote ${history.events.length} events of ${workflowId} to ${historyFile}\n`);

    const report = await lineage(['report', name]);
    expect(report.code).toBe(1);
    expect(report.stderr.trim()).toBe(`error: ${workflowId} is still running; see: npm run lineage -- status ${name}`);

    await cli.env.client.workflow.getHandle(workflowId).terminate('test over');
  });

  it('status and report of a lineage that does not exist: one line, exit 1', async () => {
    const status = await lineage(['status', 'no-such-lineage-anywhere']);
    expect(status.code).toBe(1);
    expect(status.stderr).toBe('error: no lineage workflow valuedrift/no-such-lineage-anywhere\n');
    const report = await lineage(['report', 'no-such-lineage-anywhere', '--json']);
    expect(report.code).toBe(1);
    expect(report.stdout).toBe('');
    expect(report.stderr).toBe('error: no lineage workflow valuedrift/no-such-lineage-anywhere\n');
  });

  it('status --watch --json: one JSON document per poll, ending by itself when the lineage is done', async () => {
    const name = uniqueName('cli-watch');
    const workflowId = workflowIds.lineage(name);
    expect((await lineage(['start', await specFile(name)])).code).toBe(0);
    const ref = { uri: `s3://valuedrift/lineages/${name}/report/index.html`, sha256: 'b'.repeat(64), bytes: 1 };
    let finished = false;
    const watched = await lineage(['status', name, '--watch', '--json'], (chunk) => {
      // Finish the lineage once the watcher has printed its first poll.
      if (finished || !chunk.includes('\n')) return;
      finished = true;
      void cli.env.client.workflow.getHandle(workflowId).signal(finishSignal, { lineage: name, report: ref, stages: [] });
    });
    expect(watched.stderr).toBe('');
    expect(watched.code).toBe(0);
    const polls = watched.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as ProgressView);
    expect(polls.length).toBeGreaterThanOrEqual(2);
    expect(polls[0]?.status).toBe('running');
    expect(polls.at(-1)).toMatchObject({ workflowId, status: 'done' });
    expect(polls.at(-1)?.stages.map((s) => s.status)).toEqual(['done', 'done']);
  });

  it('report --json and report of a finished lineage: the result, its drift rows, the report copied locally', async () => {
    const name = uniqueName('cli-report');
    const file = await specFile(name);
    const workflowId = workflowIds.lineage(name);
    expect((await lineage(['start', file])).code).toBe(0);
    const html = `<!doctype html><title>${name}</title>`;
    const reportRef = await putBytes(`lineages/${name}/report/index.html`, html, 'text/html');
    const driftRef = await putBytes(`lineages/${name}/sft/drift.json`, '{}', 'application/json');
    const result: LineageResult = {
      lineage: name,
      report: reportRef,
      stages: [
        {
          stageId: 'sft',
          kind: 'sft',
          cached: false,
          totalSteps: 60,
          finalCheckpoint: reportRef.uri,
          drift: driftRef,
          driftRows: [{ category: 'abortion', stance: 'support', M: 0.25, eta: 0.5 }],
        },
      ],
    };
    await cli.env.client.workflow.getHandle(workflowId).signal(finishSignal, result);
    await cli.env.client.workflow.getHandle(workflowId).result();

    const out = path.join(cli.dir, 'reports');
    const asJson = await lineage(['report', name, '--json', '--out', out]);
    expect(asJson.stderr).toBe('');
    expect(asJson.code).toBe(0);
    const j = JSON.parse(asJson.stdout) as ReportJson;
    const localCopy = path.join(out, name, 'index.html');
    expect(j).toEqual({ workflowId, ...result, localCopy });
    expect(await fs.readFile(localCopy, 'utf8')).toBe(html);

    const text = await lineage(['report', name, '--out', out]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^sft\s+abortion\s+support\s+\+0\.25\s+0\.50$/m);
    expect(text.stdout).toContain(`report: ${reportRef.uri}\nlocal copy: ${localCopy}\n`);
  });
});
