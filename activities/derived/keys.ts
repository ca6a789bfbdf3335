/**
 * Content keys and store places of built datasets (nodes of the lineage DAG). A build's key is a hash
 * of everything that determines its rows: the recipe and its settings, the sha256 of every dataset it
 * is built from, the topics it measures against, who judges and who generates (endpoint identity and
 * model) and the recipe's version. The same key is served from the store's cache, like a stage.
 */
import type { SyntheticPairsBuild } from '../../common/spec';
import { canonicalJson, endpointIdentity } from '../judge/cache';
import type { JudgeIdentity } from '../judge/judgeAll';
import { JUDGE_PROMPT_VERSION } from '../judge/prompt';
import { sha256Hex } from '../store';

/** Bump when a recipe changes what the same inputs produce (prompts, selection, checks). */
export const DERIVED_VERSION = 'derived-v1';
/** Part of every generator call's key: bump when the system prompt's wording changes. */
export const STANCE_PROMPT_VERSION = 'stance-writer-v1';

export const derivedKeys = {
  /** The build's cache record (write-once): its dataset and its side outputs. */
  record: (buildKey: string) => `cache/derived/${buildKey}.json`,
  selection: (buildKey: string) => `derived/${buildKey}/selection.json`,
  labelled: (buildKey: string, alignment: 'support-aligned' | 'oppose-aligned') => `derived/${buildKey}/${alignment}.jsonl`,
  manifest: (buildKey: string) => `derived/${buildKey}/manifest.json`,
  /** One generator answer, by its call key. */
  generation: (callKey: string) => `cache/generator/${callKey.slice(0, 2)}/${callKey}.json`,
};

export interface BuildKeyInput {
  build: SyntheticPairsBuild;
  /** Role in `from` → sha256 of that dataset's prepared rows. */
  sources: Record<string, string>;
  topics: Record<string, string>;
  judge: JudgeIdentity;
  generatorEndpoint: string;
  seed: number;
}

export function buildKey(input: BuildKeyInput): string {
  // `rows` is a declaration for `lineage plan` and the generator's concurrency and rate are how fast,
  // not what: none of them changes the rows.
  const { rows: _rows, generator, ...recipe } = input.build;
  const { concurrency: _c, requestsPerMinute: _r, ...gen } = generator;
  return sha256Hex(
    canonicalJson({
      v: DERIVED_VERSION,
      recipe,
      generator: { ...gen, endpoint: endpointIdentity(input.generatorEndpoint), promptVersion: STANCE_PROMPT_VERSION },
      sources: input.sources,
      topics: input.topics,
      judge: { ...input.judge, promptVersion: JUDGE_PROMPT_VERSION },
      seed: input.seed,
    }),
  );
}

/** A generator call is a function of these (at temperature 0); the key of its cached answer. */
export function generationCallKey(input: { endpoint: string; model: string; messages: unknown; maxTokens: number; temperature: number; seed: number }): string {
  return sha256Hex(canonicalJson({ ...input, endpoint: endpointIdentity(input.endpoint), v: STANCE_PROMPT_VERSION }));
}
