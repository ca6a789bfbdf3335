/**
 * The local judge kinds, the model name each serves, and the parser for `VALUEDRIFT_LOCAL_JUDGE`.
 * Pure (no environment read here: infra/settings.ts reads the variable and parses it with this).
 */

/** Which local judge server: the MiniLM stance classifier or llama.cpp serving SmolLM2-135M. */
export type LocalJudgeKind = 'smollm2' | 'minilm';
export const LOCAL_JUDGE_KINDS: readonly LocalJudgeKind[] = ['minilm', 'smollm2'];
/** The name each server answers to; what VALUEDRIFT_JUDGE_MODEL must say for that local judge. */
export const LOCAL_JUDGE_MODELS: Readonly<Record<LocalJudgeKind, string>> = { smollm2: 'smollm2-judge', minilm: 'minilm-stance' };
/** The environment variable that picks the local judge where no caller does. */
export const LOCAL_JUDGE_ENV = 'VALUEDRIFT_LOCAL_JUDGE';
export const DEFAULT_LOCAL_JUDGE_KIND: LocalJudgeKind = 'minilm';

function isLocalJudgeKind(value: string): value is LocalJudgeKind {
  return (LOCAL_JUDGE_KINDS as readonly string[]).includes(value);
}

/** Parses a kind name; anything but `minilm` / `smollm2` is an error that says what is accepted. */
export function parseLocalJudgeKind(value: string, source = 'local judge kind'): LocalJudgeKind {
  if (isLocalJudgeKind(value)) return value;
  throw new Error(`${source}=${JSON.stringify(value)} is not a local judge; expected one of ${LOCAL_JUDGE_KINDS.join(', ')}`);
}

