import { defineConfig } from 'vitest/config';

// `npm test` (infra/test.ts) starts the local stack before vitest runs; tests read its
// addresses from the environment (.data/stack.env). Two CPU cores: files run one at a time.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    pool: 'forks',
    fileParallelism: false,
  },
});
