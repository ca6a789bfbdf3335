/** Workflow barrel: the worker's `workflowsPath` points here. */
export { lineageWorkflow, lineageProgressQuery, type LineageProgress, type LineageResult } from './lineage';
export { stageWorkflow, stageProgressQuery, checkpointReadySignal, type StageProgress, type StageWorkflowInput, type StageWorkflowResult } from './stage';
export { evaluateCheckpointWorkflow, type EvaluateCheckpointInput, type EvaluateCheckpointResult } from './evaluate';
export { buildDatasetWorkflow, datasetWorkflow, type BuildDatasetInput, type BuildDatasetResult, type DatasetWorkflowResult } from './dataset';
export { judgeBudgetWorkflow, type JudgeBudgetInput, type JudgeBudgetResult } from './judgeBudget';
