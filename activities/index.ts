/**
 * The activities a worker registers, built from the worker's dependencies (a Temporal client for
 * announcing checkpoints). Workflows import only the `Activities` type.
 */
import { Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import type { CheckpointAnnouncement } from '../common/contracts';
import { SIGNALS } from '../common/config';
import { claimLineage, resolveStage, recordStageCache } from './cache';
import { prepareDatasets } from './datasets';
import { derivedActivities } from './derived';
import { collectJudgeBatch, pollJudgeBatch, submitJudgeBatch } from './evaluation/batchJudge';
import { computeDrift } from './evaluation/drift';
import { judgeResponses, type JudgeResponsesInput } from './evaluation/judge';
import { workerEnv } from './env';
import { budgetSettingsOf, judgeBudgets } from './judge/budget';
import { lookupEvaluation } from './evaluation/lookup';
import { summariseEvaluation } from './evaluation/summarise';
import { generateResponses } from './generation';
import { resolveBaseModel } from './models';
import { writeReport } from './report/write';
import { trainStage, type Announce, type TrainStageInput, type TrainStageResult } from './training';

export interface ActivityDeps {
  /** Used to signal the stage workflow that scheduled a training activity. */
  client: Client;
}

/** Signals the workflow that scheduled the current activity (the stage workflow). */
export function announcer(client: Client): Announce {
  return async (a: CheckpointAnnouncement) => {
    const wf = Context.current().info.workflowExecution;
    if (!wf) throw new Error('trainStage must run inside a workflow (no workflow to announce to)');
    await client.workflow.getHandle(wf.workflowId).signal(SIGNALS.checkpointReady, a);
  };
}

export function createActivities(deps: ActivityDeps) {
  // The judge budget shared by every cpu worker, when this worker's settings set one (workflows/judgeBudget.ts).
  const budgets = judgeBudgets(deps.client, () => budgetSettingsOf(workerEnv()));
  return {
    prepareDatasets,
    resolveBaseModel,
    claimLineage,
    resolveStage,
    recordStageCache,
    lookupEvaluation,
    /** Trains one stage; safe to retry (resumes from the last uploaded checkpoint). Writes checkpoints. */
    trainStage: (input: TrainStageInput): Promise<TrainStageResult> => trainStage(input, announcer(deps.client)),
    generateResponses,
    judgeResponses: (input: JudgeResponsesInput) => judgeResponses(input, budgets),
    /** Batch mode: submit once (resumable), poll briefly between the workflow's timers, collect into the judge cache. */
    submitJudgeBatch: (input: JudgeResponsesInput) => submitJudgeBatch(input, budgets),
    pollJudgeBatch,
    collectJudgeBatch: (input: JudgeResponsesInput & { batchId: string }) => collectJudgeBatch(input, budgets),
    summariseEvaluation,
    computeDrift,
    writeReport,
    /** Built datasets (activities/derived): key lookup, prompt selection, generating and checking. */
    ...derivedActivities,
    // Their judge calls share the same budget as evaluations'.
    writeStancePairs: (input: Parameters<typeof derivedActivities.writeStancePairs>[0]) => derivedActivities.writeStancePairs(input, budgets),
    writeStanceAnalysis: (input: Parameters<typeof derivedActivities.writeStanceAnalysis>[0]) => derivedActivities.writeStanceAnalysis(input, budgets),
  };
}
export type Activities = ReturnType<typeof createActivities>;
