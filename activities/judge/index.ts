/**
 * The stance judge (DESIGN §4 "Judge"): prompt, logprob parsing, cache, bounded/retrying calls,
 * Batch API mode and the agreement check. No Temporal imports: the activity wrapper heartbeats
 * from `onProgress`/`heartbeat`, passes its cancellation signal, and maps JudgeRequestError to a
 * non-retryable failure.
 */
export { buildJudgeMessages, JUDGE_PROMPT_VERSION, type JudgeMessagesInput } from './prompt';
export { argmaxStance, labelOfToken, normaliseToken, parseStanceLogprobs, readStanceLogprobs, type StanceReading, type TokenLogprob } from './parse';
export { cacheKey, cacheObjectKey, canonicalJson, CachedJudgment, InMemoryJudgeCache, type CacheKeyInput, type JudgeCache } from './cache';
export { createJudgeClient, DEFAULT_JUDGE_MODEL, DEFAULT_JUDGE_TIMEOUT_MS, JUDGE_ENV, type JudgeClientOptions } from './client';
export {
  backoffDelayMs,
  DEFAULT_BACKOFF,
  isRetryable,
  JudgeRequestError,
  JudgeRetriesExhaustedError,
  retryAfterMs,
  type BackoffOptions,
} from './retry';
export {
  DEFAULT_TOP_LOGPROBS,
  judgeAll,
  JudgeItem,
  judgeRequestBody,
  judgmentFromCompletion,
  type JudgeAllInput,
  type JudgeAllResult,
  type TokenLimitParam,
} from './judgeAll';
export { DEFAULT_BATCH_POLL_MS, judgeBatch, type BatchHeartbeat, type JudgeBatchInput, type JudgeBatchResult } from './batch';
export {
  formatJudgeCheck,
  LabelledStanceRow,
  readLabelledStanceRows,
  runJudgeCheck,
  scoreJudgeCheck,
  type CalibrationBin,
  type JudgeCheckResult,
  type RunJudgeCheckInput,
} from './check';
