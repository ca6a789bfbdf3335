/**
 * Small numerical kernel for the drift statistics: Student-t quantiles and t-based confidence
 * intervals of a mean. Pure module (no Node built-ins, no dependencies) because workflow code
 * imports it through common/drift.ts, and the workflow sandbox must stay deterministic.
 *
 * Accuracy: tQuantile agrees with printed tables to well below 1e-6 for df ≥ 1 and 1e-12 < p <
 * 1 − 1e-12 (the tests pin it against table values and the closed forms for df = 1 and df = 2).
 */

/** ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; ~1e-15 relative), with reflection below 0.5. */
export function logGamma(x: number): number {
  if (!(x > 0) || !Number.isFinite(x)) throw new RangeError(`logGamma needs a finite x > 0, got ${x}`);
  if (x < 0.5) {
    // Reflection keeps the Lanczos series in the range where its coefficients were fitted.
    return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  }
  const z = x - 1;
  let series = LANCZOS[0] as number;
  for (let i = 1; i < LANCZOS.length; i++) series += (LANCZOS[i] as number) / (z + i);
  const t = z + LANCZOS_G + 0.5;
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(series);
}

const LANCZOS_G = 7;
const LANCZOS = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
  12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
] as const;

const FPMIN = 1e-300;
const EPS = 1e-16;
// Continued fractions converge in O(sqrt(max(a, b))) terms; df up to 1e6 needs ~1e3.
const MAX_ITERATIONS = 100_000;

/** Regularised incomplete beta I_x(a, b) (continued fraction, modified Lentz). */
export function incompleteBeta({ x, a, b }: { x: number; a: number; b: number }): number {
  if (!(a > 0) || !(b > 0)) throw new RangeError(`incompleteBeta needs a, b > 0, got a=${a} b=${b}`);
  if (Number.isNaN(x)) throw new RangeError('incompleteBeta: x is NaN');
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const logFront = logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log1p(-x);
  const front = Math.exp(logFront);
  // The fraction converges fast only on this side of the mean; use the symmetry on the other.
  if (x < (a + 1) / (a + b + 2)) return (front * betaContinuedFraction(x, a, b)) / a;
  return 1 - (front * betaContinuedFraction(1 - x, b, a)) / b;
}

function betaContinuedFraction(x: number, a: number, b: number): number {
  const qab = a + b;
  const qap = a + 1;
  const qam = a - 1;
  let c = 1;
  let d = 1 - (qab * x) / qap;
  if (Math.abs(d) < FPMIN) d = FPMIN;
  d = 1 / d;
  let h = d;
  for (let m = 1; m <= MAX_ITERATIONS; m++) {
    const m2 = 2 * m;
    let aa = (m * (b - m) * x) / ((qam + m2) * (a + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < FPMIN) d = FPMIN;
    c = 1 + aa / c;
    if (Math.abs(c) < FPMIN) c = FPMIN;
    d = 1 / d;
    h *= d * c;
    aa = (-(a + m) * (qab + m) * x) / ((a + m2) * (qap + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < FPMIN) d = FPMIN;
    c = 1 + aa / c;
    if (Math.abs(c) < FPMIN) c = FPMIN;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < EPS) return h;
  }
  throw new Error(`incompleteBeta did not converge (x=${x}, a=${a}, b=${b})`);
}

/** Regularised upper incomplete gamma Q(a, x) (series below a + 1, continued fraction above). */
export function upperIncompleteGamma({ a, x }: { a: number; x: number }): number {
  if (!(a > 0)) throw new RangeError(`upperIncompleteGamma needs a > 0, got ${a}`);
  if (Number.isNaN(x)) throw new RangeError('upperIncompleteGamma: x is NaN');
  if (x <= 0) return 1;
  const logFront = -x + a * Math.log(x) - logGamma(a);
  if (x < a + 1) {
    let ap = a;
    let sum = 1 / a;
    let del = sum;
    for (let n = 1; n <= MAX_ITERATIONS; n++) {
      ap += 1;
      del *= x / ap;
      sum += del;
      if (Math.abs(del) < Math.abs(sum) * EPS) return 1 - sum * Math.exp(logFront);
    }
    throw new Error(`upperIncompleteGamma series did not converge (a=${a}, x=${x})`);
  }
  let b = x + 1 - a;
  let c = 1 / FPMIN;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i <= MAX_ITERATIONS; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < FPMIN) d = FPMIN;
    c = b + an / c;
    if (Math.abs(c) < FPMIN) c = FPMIN;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < EPS) return Math.exp(logFront) * h;
  }
  throw new Error(`upperIncompleteGamma fraction did not converge (a=${a}, x=${x})`);
}

/** P(T > t) for t ≥ 0 under Student's t with df degrees of freedom (df = Infinity: normal). */
function upperTail(t: number, df: number): number {
  if (df === Infinity) return 0.5 * upperIncompleteGamma({ a: 0.5, x: (t * t) / 2 });
  // Written as ν/(ν+t²) so that large t (small tails) is computed directly, not as 1 − (≈1).
  return 0.5 * incompleteBeta({ x: df / (df + t * t), a: df / 2, b: 0.5 });
}

/** Above this df the Cornish–Fisher series is exact to double precision and cheaper than I_x. */
const CORNISH_FISHER_MIN_DF = 1e6;

/**
 * The p-quantile of Student's t distribution with `df` degrees of freedom (df > 0, may be
 * fractional; df = Infinity gives the standard normal quantile). Inverts the tail probability by
 * bisection, which is slower than Newton but cannot diverge on the heavy tails of df ≈ 1.
 */
export function tQuantile({ p, df }: { p: number; df: number }): number {
  if (!(p > 0 && p < 1)) throw new RangeError(`tQuantile needs 0 < p < 1, got ${p}`);
  if (!(df > 0)) throw new RangeError(`tQuantile needs df > 0, got ${df}`);
  if (p === 0.5) return 0;
  const tail = Math.min(p, 1 - p);
  const sign = p > 0.5 ? 1 : -1;
  if (df !== Infinity && df > CORNISH_FISHER_MIN_DF) {
    const z = invertTail(tail, Infinity);
    const z2 = z * z;
    // Abramowitz & Stegun 26.7.5; the ν⁻³ term is below 1e-17 for this df.
    const t = z + (z * (z2 + 1)) / (4 * df) + (z * (5 * z2 * z2 + 16 * z2 + 3)) / (96 * df * df);
    return sign * t;
  }
  return sign * invertTail(tail, df);
}

function invertTail(tail: number, df: number): number {
  let lo = 0;
  let hi = 1;
  while (upperTail(hi, df) > tail) {
    lo = hi;
    hi *= 2;
    if (!Number.isFinite(hi)) throw new RangeError(`tQuantile: tail ${tail} is beyond double range for df=${df}`);
  }
  for (let i = 0; i < 200 && hi - lo > 1e-15 * Math.max(1, hi); i++) {
    const mid = (lo + hi) / 2;
    if (upperTail(mid, df) > tail) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/** Arithmetic mean; NaN for an empty list, so callers decide what "no data" means. */
export function mean(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  let sum = 0;
  for (const v of values) sum += v;
  return sum / values.length;
}

/** Unbiased sample variance (two-pass, so a large common offset does not cancel digits away). */
export function sampleVariance(values: readonly number[]): number {
  const n = values.length;
  if (n < 2) return NaN;
  const m = mean(values);
  let ss = 0;
  let comp = 0;
  for (const v of values) {
    ss += (v - m) * (v - m);
    comp += v - m;
  }
  return (ss - (comp * comp) / n) / (n - 1);
}

export interface MeanIntervalInput {
  values: readonly number[];
  /** Two-sided confidence level, 0.95 unless told. */
  level?: number;
}

export interface MeanInterval {
  mean: number;
  lo: number;
  hi: number;
  n: number;
  /** n − 1; 0 means the interval collapsed to the point (one value carries no spread). */
  df: number;
  /** Half width: t_{(1+level)/2, n−1} · s / √n. */
  halfWidth: number;
}

/**
 * Two-sided t confidence interval of the mean of `values`. One value gives df = 0 and a zero-width
 * interval at the value rather than an infinite one: downstream η compares points against the
 * interval, and "only this exact value" is the honest reading of a single observation.
 */
export function meanConfidenceInterval({ values, level = 0.95 }: MeanIntervalInput): MeanInterval {
  const n = values.length;
  if (n === 0) throw new RangeError('meanConfidenceInterval needs at least one value');
  if (!(level > 0 && level < 1)) throw new RangeError(`confidence level must be in (0, 1), got ${level}`);
  for (const v of values) if (!Number.isFinite(v)) throw new RangeError(`meanConfidenceInterval: non-finite value ${v}`);
  const m = mean(values);
  if (n === 1) return { mean: m, lo: m, hi: m, n, df: 0, halfWidth: 0 };
  const df = n - 1;
  const se = Math.sqrt(Math.max(0, sampleVariance(values)) / n);
  const halfWidth = se === 0 ? 0 : tQuantile({ p: (1 + level) / 2, df }) * se;
  return { mean: m, lo: m - halfWidth, hi: m + halfWidth, n, df, halfWidth };
}
