/**
 * Hostile checkpoint announcements: whoever can signal a stage workflow can send it anything. On the
 * real Temporal dev server, with the real store activities and the workflow harness's fake trainer,
 * malformed `checkpointReady` payloads sent between the real announcements are received (they are in
 * the history) and ignored: no evaluation starts for them, the progress lists only real checkpoints,
 * and the lineage completes.
 */
import { Context } from '@temporalio/activity';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SIGNALS, TASK_QUEUES, workflowIds } from '../../common/config';
import { lineageWorkflow, stageProgressQuery, type LineageResult } from '../../workflows';
import { fakeActivities, loadStackEnv, recorder, stage, startTestServer, testSpec, uniqueName, withWorkers, type FakeTrainingPlan } from '../support/workflowEnv';

let env: TestWorkflowEnvironment;

beforeAll(async () => {
  loadStackEnv();
  env = await startTestServer();
});
afterAll(async () => {
  await env?.teardown();
});

const SHA = 'a'.repeat(64);
/** Each would start an evaluation of step 3 (or crash the handler) if it were used unchecked. */
const HOSTILE: unknown[] = [
  null,
  'checkpoint 3 is ready',
  [{ stageId: 'sft', step: 3 }],
  { stageId: 'sft', step: 3, totalSteps: 4 },
  { stageId: 'sft', step: 3, totalSteps: 4, ref: { uri: 'file:///etc/passwd', sha256: SHA, bytes: 1 } },
  { stageId: 'sft', step: 3, totalSteps: 4, ref: { uri: 's3://valuedrift/x/manifest.json', sha256: 'not-hex', bytes: 1 } },
  { stageId: 'sft', step: -3, totalSteps: 4, ref: { uri: 's3://valuedrift/x/manifest.json', sha256: SHA, bytes: 1 } },
  { stageId: 'sft', step: 3.5, totalSteps: 4, ref: { uri: 's3://valuedrift/x/manifest.json', sha256: SHA, bytes: 1 } },
  { stageId: 'sft', step: 3, totalSteps: 4, ref: { uri: 's3://valuedrift/x/evil.bin', sha256: SHA, bytes: 1 } },
  { stageId: 'sft', step: 3, totalSteps: 4, ref: { uri: 's3://valuedrift/x/manifest.json', sha256: SHA, bytes: -1 } },
];

describe('checkpointReady announcements', () => {
  it('ignores malformed payloads and completes with only the real checkpoints', async () => {
    const rec = recorder();
    const name = uniqueName('hostile-signal');
    const plan = (): FakeTrainingPlan => ({
      steps: [2, 4],
      after: async (_stageId, step) => {
        if (step !== 2) return;
        // From inside the training activity, like a real (or compromised) announcer.
        const wfId = Context.current().info.workflowExecution?.workflowId as string;
        const handle = env.client.workflow.getHandle(wfId);
        for (const payload of HOSTILE) await handle.signal(SIGNALS.checkpointReady, payload);
      },
    });
    const spec = testSpec(name, [stage.sft()]);
    const result = await withWorkers(env, fakeActivities(env, rec, plan), async () => {
      const handle = await env.client.workflow.start(lineageWorkflow, { taskQueue: TASK_QUEUES.workflows, workflowId: workflowIds.lineage(name), args: [spec] });
      const r = (await handle.result()) as LineageResult;
      const sp = await env.client.workflow.getHandle(workflowIds.stage(name, 'sft')).query(stageProgressQuery);
      return { r, sp };
    });

    const gens = rec.events.filter((e) => e.what === 'generate').map((e) => `${e.stageId}@${e.step}`).sort();
    expect(gens).toEqual(['base@0', 'sft@2', 'sft@4']);
    expect(result.sp.checkpoints).toEqual([2, 4]);
    expect(result.sp.totalSteps).toBe(4);
    expect(result.r.stages.map((s) => s.stageId)).toEqual(['sft']);

    // The hostile signals did reach the stage workflow: they were ignored, not lost.
    const history = await env.client.workflow.getHandle(workflowIds.stage(name, 'sft')).fetchHistory();
    const signalled = (history.events ?? []).filter((e) => e.workflowExecutionSignaledEventAttributes != null);
    expect(signalled.length).toBe(HOSTILE.length + 2);
  }, 180_000);
});
