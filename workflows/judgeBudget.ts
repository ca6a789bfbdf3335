/**
 * The judge's request and token budget, shared by every cpu worker (issue 12): one long-running
 * workflow per judge endpoint + model (id `judge-budget-<hash>`, see `judgeBudgetWorkflowId`),
 * started by the first worker that asks (update-with-start). A judge call asks it for a grant with
 * the Update `acquire({ requests, tokens })` and is answered "granted" or "retry after N ms"; the
 * workflow keeps a sliding window of the grants it gave (requests and estimated tokens per
 * `windowMs`, 60 s in production) and never grants past the limits the callers carry.
 *
 * Deterministic: the only clock is workflow time. A refused acquire is refused by the Update's
 * validator, so it leaves no event in history; only grants do. The workflow continues-as-new after
 * `maxGrantsPerRun` grants (or when the server suggests it), carrying the window, and completes
 * after `idleMs` without a grant. Its inputs and history hold counts and a hash only: no endpoint,
 * model name or credential.
 */
import { allHandlersFinished, ApplicationFailure, condition, continueAsNew, defineQuery, defineSignal, defineUpdate, setHandler, workflowInfo } from '@temporalio/workflow';

/** The limits a caller carries (its worker's settings); the most recent caller's limits apply. */
export interface BudgetLimits {
  /** Requests per window; undefined = unlimited. */
  requests?: number | undefined;
  /** Tokens (estimated prompt + completion) per window; undefined = unlimited. */
  tokens?: number | undefined;
  /** The window's length in ms (60,000 for per-minute limits). */
  windowMs: number;
}

export interface AcquireRequest {
  requests: number;
  tokens: number;
  limits: BudgetLimits;
  /**
   * The caller's clock when it asked (ms since the epoch). Workflow time is the time its task
   * started, which can lag the real time by seconds (a first task picked up late); a grant stamped
   * that early would leave the window early. So a grant counts from the later of the two. It is
   * part of the Update's input, so replay sees the same value.
   */
  now?: number | undefined;
}
/** `at`: the workflow time the grant counts from (what the window holds). */
export type AcquireAnswer = { granted: true; at?: number } | { granted: false; retryAfterMs: number };

/** One grant in the window: [workflow time ms, requests, tokens]. */
export type Grant = [number, number, number];

export interface BudgetState {
  grants: Grant[];
  /** No grant before this workflow time (a provider's 429 asked us to wait). */
  pausedUntil: number;
  limits: BudgetLimits;
}

export interface JudgeBudgetInput {
  /** Carried across continue-as-new; absent on the first run. */
  state?: BudgetState | undefined;
  /** Completes after this long without a grant (ms). */
  idleMs: number;
  /** Continues-as-new after this many grants in one run (history stays small). */
  maxGrantsPerRun: number;
}

export interface JudgeBudgetResult {
  grants: number;
}

export const acquireUpdate = defineUpdate<AcquireAnswer, [AcquireRequest]>('acquire');
/** A provider's 429: pause every grant for `retryAfterMs` (optional feedback from the callers). */
export const throttledSignal = defineSignal<[{ retryAfterMs: number; now?: number | undefined }]>('throttled');

/** What the window holds now (`temporal workflow query --name state`): for operators and tests. */
export interface BudgetView {
  requests: number;
  tokens: number;
  limits: BudgetLimits;
  pausedUntil: number;
  grantsThisRun: number;
}
export const budgetStateQuery = defineQuery<BudgetView>('state');

export const DEFAULT_BUDGET_IDLE_MS = 10 * 60_000;
export const DEFAULT_MAX_GRANTS_PER_RUN = 1000;
/** A 429's pause is capped so one odd header cannot stall every worker for long. */
export const MAX_THROTTLE_MS = 120_000;

/** Grants still inside the window at `now` (a grant at t counts during [t, t + windowMs)). */
export function liveGrants(grants: readonly Grant[], now: number, windowMs: number): Grant[] {
  return grants.filter(([t]) => t > now - windowMs);
}

/**
 * Whether `req` fits the window at `now`, and if not, how long until it will (pure: the window
 * arithmetic the unit test checks). A request larger than a whole limit is granted when the window
 * is empty, so it is slowed down, never refused for ever.
 */
export function decide(state: BudgetState, req: { requests: number; tokens: number }, now: number): AcquireAnswer {
  const { limits } = state;
  if (now < state.pausedUntil) return { granted: false, retryAfterMs: state.pausedUntil - now };
  // Oldest first (callers' clocks may disagree by a little).
  const live = liveGrants(state.grants, now, limits.windowMs).sort((a, b) => a[0] - b[0]);
  let usedR = 0;
  let usedT = 0;
  for (const [, r, t] of live) {
    usedR += r;
    usedT += t;
  }
  const fits = (r: number, t: number): boolean =>
    (r === 0 && t === 0) ||
    ((limits.requests === undefined || r + req.requests <= limits.requests) && (limits.tokens === undefined || t + req.tokens <= limits.tokens));
  if (fits(usedR, usedT)) return { granted: true };
  // The earliest time enough of the window has expired: grants leave it oldest first.
  for (const [t, r, tok] of live) {
    usedR -= r;
    usedT -= tok;
    if (fits(usedR, usedT)) return { granted: false, retryAfterMs: Math.max(1, t + limits.windowMs - now) };
  }
  return { granted: false, retryAfterMs: 1 };
}

/** Records a grant at `now` and drops what left the window. */
export function record(state: BudgetState, req: { requests: number; tokens: number }, now: number): BudgetState {
  return { ...state, grants: [...liveGrants(state.grants, now, state.limits.windowMs), [now, req.requests, req.tokens]] };
}

/** The time a request is judged at: workflow time, or the caller's clock when later (by at most a window). */
export function grantTime(workflowNow: number, req: Pick<AcquireRequest, 'now' | 'limits'>): number {
  if (req.now === undefined || !Number.isFinite(req.now)) return workflowNow;
  return Math.max(workflowNow, Math.min(req.now, workflowNow + req.limits.windowMs));
}

function validLimits(l: BudgetLimits): boolean {
  const ok = (v: number | undefined): boolean => v === undefined || (Number.isInteger(v) && v > 0);
  return ok(l.requests) && ok(l.tokens) && Number.isInteger(l.windowMs) && l.windowMs > 0;
}

export async function judgeBudgetWorkflow(input: JudgeBudgetInput): Promise<JudgeBudgetResult> {
  let state: BudgetState = input.state ?? { grants: [], pausedUntil: 0, limits: { windowMs: 60_000 } };
  let grants = 0;
  let touched = false;

  setHandler(
    acquireUpdate,
    (req) => {
      const now = grantTime(Date.now(), req);
      state = { ...state, limits: req.limits };
      const answer = decide(state, req, now);
      if (!answer.granted) return answer;
      state = record(state, req, now);
      grants++;
      touched = true;
      return { granted: true, at: now };
    },
    {
      // A refusal here leaves no event in history: a busy window costs the history nothing.
      validator: (req) => {
        if (!Number.isInteger(req.requests) || req.requests < 0 || !Number.isInteger(req.tokens) || req.tokens < 0 || !validLimits(req.limits)) {
          throw ApplicationFailure.nonRetryable('acquire: requests and tokens must be whole numbers ≥ 0 and limits positive', 'BadBudgetRequest');
        }
        const answer = decide({ ...state, limits: req.limits }, req, grantTime(Date.now(), req));
        if (!answer.granted) throw ApplicationFailure.create({ message: 'budget exhausted', type: 'BudgetExhausted', nonRetryable: true, details: [answer] });
      },
    },
  );
  setHandler(budgetStateQuery, () => {
    const live = liveGrants(state.grants, Date.now(), state.limits.windowMs);
    return { requests: live.reduce((a, g) => a + g[1], 0), tokens: live.reduce((a, g) => a + g[2], 0), limits: state.limits, pausedUntil: state.pausedUntil, grantsThisRun: grants };
  });
  setHandler(throttledSignal, ({ retryAfterMs, now }) => {
    const wait = Math.min(Math.max(0, Math.floor(retryAfterMs)), MAX_THROTTLE_MS);
    state = { ...state, pausedUntil: Math.max(state.pausedUntil, grantTime(Date.now(), { now, limits: state.limits }) + wait) };
  });

  for (;;) {
    const active = await condition(() => touched, input.idleMs);
    touched = false;
    if (!active) {
      await condition(allHandlersFinished);
      // A grant may have come in while the handlers finished: only a truly idle budget ends.
      if (!touched) return { grants };
    }
    if (grants >= input.maxGrantsPerRun || workflowInfo().continueAsNewSuggested) {
      await condition(allHandlersFinished);
      const now = Date.now();
      await continueAsNew<typeof judgeBudgetWorkflow>({ ...input, state: { ...state, grants: liveGrants(state.grants, now, state.limits.windowMs) } });
    }
  }
}
