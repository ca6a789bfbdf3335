import { defineConfig } from 'vitest/config';

// Suites kept out of `npm test` for their cost, each behind its own script (they need the stack's
// judge and S3: `npm run dev:up` first):
//   npm run test:derived       test/derived/build.slow.ts a synthetic-pairs dataset built end to end
// The whole fault matrix is `npm run test:faults` (test/faults/run.ts); its fast subset
// (test/faults/fast.test.ts) is part of `npm test`.
export default defineConfig({
  test: {
    include: ['test/**/*.slow.ts'],
    testTimeout: 3_600_000,
    hookTimeout: 600_000,
    pool: 'forks',
    fileParallelism: false,
  },
});
