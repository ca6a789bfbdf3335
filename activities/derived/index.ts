/** Activities of built datasets (nodes of the lineage DAG); registered by activities/index.ts. */
import { resolveDerivedDataset, selectStancePrompts, writeStancePairs } from './syntheticPairs';
import { resolveStanceAnalysis, retrieveStanceAnalysis, writeStanceAnalysis } from './analysis';

export { DerivedRecord, promptText, stanceSystemPrompt, type WriteResult } from './syntheticPairs';
export { buildKey, derivedKeys, DERIVED_VERSION, STANCE_PROMPT_VERSION } from './keys';

export const derivedActivities = { resolveDerivedDataset, selectStancePrompts, writeStancePairs, resolveStanceAnalysis, retrieveStanceAnalysis, writeStanceAnalysis };
export type DerivedActivities = typeof derivedActivities;
