/**
 * Replays every history recorded from real runs (`npm run lineage -- export-history …`) against the
 * current workflow code. A change that alters the commands a workflow issues must go behind
 * `patched()`, or these fail with a DeterminismViolationError.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import { DeterminismViolationError } from '@temporalio/workflow';
import { Worker } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import { workflowBundle } from '../support/workflowEnv';

const DIR = path.join(__dirname, 'histories');
const files = fs.existsSync(DIR) ? fs.readdirSync(DIR).filter((f) => f.endsWith('.json')).sort() : [];

function load(file: string) {
  return historyFromJSON(JSON.parse(fs.readFileSync(path.join(DIR, file), 'utf8')));
}

describe('replay of recorded histories', () => {
  it('has recorded histories to replay (lineage, stage and evaluation workflows)', () => {
    const kinds = files.map((f) => f.split('--')[0]);
    expect(kinds).toEqual(expect.arrayContaining(['lineage', 'stage', 'evaluate']));
  });

  it.each(files)('replays %s without nondeterminism', async (file) => {
    await Worker.runReplayHistory({ workflowBundle: await workflowBundle() }, load(file), file);
  }, 120_000);

  it('detects a history whose recorded commands no longer match the code', async () => {
    const file = files.find((f) => f.startsWith('evaluate--'));
    expect(file).toBeDefined();
    const raw = JSON.parse(fs.readFileSync(path.join(DIR, file as string), 'utf8')) as { events: Array<Record<string, any>> };
    // Rename the first scheduled activity: the code schedules lookupEvaluation, the history says otherwise.
    const scheduled = raw.events.find((e) => e.activityTaskScheduledEventAttributes);
    expect(scheduled).toBeDefined();
    scheduled!.activityTaskScheduledEventAttributes.activityType.name = 'somethingElse';
    const err = await Worker.runReplayHistory({ workflowBundle: await workflowBundle() }, historyFromJSON(raw), 'edited').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DeterminismViolationError);
  }, 120_000);
});
