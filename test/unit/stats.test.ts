import { describe, expect, it } from 'vitest';
import { incompleteBeta, logGamma, mean, meanConfidenceInterval, sampleVariance, tQuantile } from '../../common/stats';

const close = (actual: number, expected: number, tol: number): void => {
  expect(Math.abs(actual - expected), `${actual} vs ${expected}`).toBeLessThanOrEqual(tol);
};

describe('tQuantile', () => {
  it('matches printed two-sided 95 % table values (t_{0.975, df})', () => {
    // The values a statistics table prints to three decimals.
    close(tQuantile({ p: 0.975, df: 1 }), 12.706, 5e-4);
    close(tQuantile({ p: 0.975, df: 4 }), 2.776, 5e-4);
    close(tQuantile({ p: 0.975, df: 10 }), 2.228, 5e-4);
    close(tQuantile({ p: 0.975, df: 30 }), 2.042, 5e-4);
    close(tQuantile({ p: 0.975, df: 1e7 }), 1.96, 5e-4);
    close(tQuantile({ p: 0.975, df: Infinity }), 1.96, 5e-4);
  });

  it('is accurate to 1e-4 against six-decimal table values', () => {
    const table: Array<[p: number, df: number, t: number]> = [
      [0.975, 1, 12.706205],
      [0.975, 2, 4.302653],
      [0.975, 3, 3.182446],
      [0.975, 4, 2.776445],
      [0.975, 5, 2.570582],
      [0.975, 10, 2.228139],
      [0.975, 30, 2.042272],
      [0.975, 100, 1.983972],
      [0.975, 1000, 1.962339],
      [0.975, Infinity, 1.959964],
      [0.95, 5, 2.015048],
      [0.9, 1, 3.077684],
      [0.995, 3, 5.840909],
      [0.999, Infinity, 3.090232],
    ];
    for (const [p, df, t] of table) close(tQuantile({ p, df }), t, 1e-5);
  });

  it('agrees with the closed forms for df = 1 (Cauchy) and df = 2', () => {
    for (const p of [0.001, 0.05, 0.3, 0.6, 0.9, 0.975, 0.9999]) {
      const cauchy = Math.tan(Math.PI * (p - 0.5));
      close(tQuantile({ p, df: 1 }), cauchy, 1e-9 * Math.max(1, Math.abs(cauchy)));
      const df2 = (2 * p - 1) / Math.sqrt(2 * p * (1 - p));
      close(tQuantile({ p, df: 2 }), df2, 1e-9 * Math.max(1, Math.abs(df2)));
    }
  });

  it('is odd around p = 0.5 and monotone in df', () => {
    expect(tQuantile({ p: 0.5, df: 3 })).toBe(0);
    close(tQuantile({ p: 0.025, df: 7 }), -tQuantile({ p: 0.975, df: 7 }), 1e-12);
    let previous = Infinity;
    for (const df of [1, 2, 3, 5, 8, 13, 21, 50, 200, 1e4, 1e6, 1e8, Infinity]) {
      const t = tQuantile({ p: 0.975, df });
      expect(t).toBeLessThan(previous);
      previous = t;
    }
  });

  it('rejects p outside (0, 1) and df ≤ 0', () => {
    expect(() => tQuantile({ p: 0, df: 3 })).toThrow(/0 < p < 1/);
    expect(() => tQuantile({ p: 1, df: 3 })).toThrow(/0 < p < 1/);
    expect(() => tQuantile({ p: 0.975, df: 0 })).toThrow(/df > 0/);
    expect(() => tQuantile({ p: Number.NaN, df: 3 })).toThrow();
  });
});

describe('special functions', () => {
  it('logGamma hits known values', () => {
    close(logGamma(0.5), 0.5 * Math.log(Math.PI), 1e-13);
    close(logGamma(1), 0, 1e-13);
    close(logGamma(10), Math.log(362880), 1e-12);
    close(logGamma(0.1), 2.252712651734206, 1e-12);
  });

  it('incompleteBeta: I_x(1, 1) = x and I_x(a, b) = 1 − I_{1−x}(b, a)', () => {
    close(incompleteBeta({ x: 0.3, a: 1, b: 1 }), 0.3, 1e-14);
    close(incompleteBeta({ x: 0.2, a: 2.5, b: 0.5 }), 1 - incompleteBeta({ x: 0.8, a: 0.5, b: 2.5 }), 1e-13);
    expect(incompleteBeta({ x: 0, a: 2, b: 3 })).toBe(0);
    expect(incompleteBeta({ x: 1, a: 2, b: 3 })).toBe(1);
  });
});

describe('meanConfidenceInterval', () => {
  it('computes the t interval of a known sample', () => {
    // 1..5: mean 3, s² = 10/4 = 2.5, se = √(2.5/5) = 0.70710678, t_{0.975,4} = 2.7764451
    // half width = 2.7764451 × 0.70710678 = 1.9632432
    const ci = meanConfidenceInterval({ values: [1, 2, 3, 4, 5] });
    expect(ci.mean).toBe(3);
    expect(ci.df).toBe(4);
    close(ci.halfWidth, 1.9632432, 1e-6);
    close(ci.lo, 1.0367568, 1e-6);
    close(ci.hi, 4.9632432, 1e-6);
  });

  it('two values: se = |a − b| / 2 and t_{0.975,1} = 12.7062', () => {
    // [0.2, 0.4]: s = 0.14142136, se = 0.1, half = 1.2706205
    const ci = meanConfidenceInterval({ values: [0.2, 0.4] });
    close(ci.mean, 0.3, 1e-15);
    close(ci.lo, -0.9706205, 1e-6);
    close(ci.hi, 1.5706205, 1e-6);
  });

  it('collapses to the point for one value (df = 0) and for zero spread', () => {
    expect(meanConfidenceInterval({ values: [0.42] })).toEqual({ mean: 0.42, lo: 0.42, hi: 0.42, n: 1, df: 0, halfWidth: 0 });
    const flat = meanConfidenceInterval({ values: [0.25, 0.25, 0.25] });
    expect([flat.lo, flat.hi]).toEqual([0.25, 0.25]);
  });

  it('honours another level and rejects empty or non-finite input', () => {
    // 90 %: t_{0.95,4} = 2.1318468; half = 2.1318468 × 0.70710678 = 1.5074433
    close(meanConfidenceInterval({ values: [1, 2, 3, 4, 5], level: 0.9 }).halfWidth, 1.5074433, 1e-6);
    expect(() => meanConfidenceInterval({ values: [] })).toThrow(/at least one/);
    expect(() => meanConfidenceInterval({ values: [0.1, Number.NaN] })).toThrow(/non-finite/);
  });

  it('mean/sampleVariance keep precision with a large offset', () => {
    expect(mean([])).toBeNaN();
    close(sampleVariance([1e9 + 1, 1e9 + 2, 1e9 + 3]), 1, 1e-9);
  });
});
