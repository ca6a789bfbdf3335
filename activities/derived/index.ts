/** Activities of built datasets (nodes of the lineage DAG); registered by activities/index.ts. */
import { resolveDerivedDataset, selectStancePrompts, writeStancePairs } from './syntheticPairs';
import { resolveStanceAnalysis, retrieveStanceAnalysis, writeStanceAnalysis } from './analysis';
import { clusterVPrism, rephraseVPrism, resolveVPrism, writeVPrism } from './vprism';
import { buildConcat } from './concat';

export { DerivedRecord, promptText, stanceSystemPrompt, type WriteResult } from './syntheticPairs';
export { buildKey, derivedKeys, DERIVED_VERSION, STANCE_PROMPT_VERSION } from './keys';

export const derivedActivities = { resolveDerivedDataset, selectStancePrompts, writeStancePairs, resolveStanceAnalysis, retrieveStanceAnalysis, writeStanceAnalysis, resolveVPrism, rephraseVPrism, clusterVPrism, writeVPrism, buildConcat };
export type DerivedActivities = typeof derivedActivities;
