/**
 * `concat` built datasets: the rows of several prepared datasets of one format joined into one, in
 * the order of their labels, optionally a seeded sample of `limit` of them. One cpu activity, which
 * streams every source through a file (memory does not grow with the data), checks each row against
 * the format, stores the result content-addressed under `datasets/`, then its manifest and the
 * build's cache record (write-once, last: a retry after a crash redoes the work and writes the same
 * bytes under the same keys).
 */
import * as fs from 'node:fs/promises';
import { createReadStream, createWriteStream } from 'node:fs';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { storeKeys } from '../../common/config';
import { ConcatBuild } from '../../common/spec';
import { activityContext } from '../context';
import { normaliseFile } from '../datasets';
import { workerEnv } from '../env';
import { canonicalJson } from '../judge/cache';
import { downloadFile, getJsonIfExists, putBytesOnce, putFileOnce, sha256File, sha256Hex, uriOf } from '../store';
import { derivedKeys } from './keys';
import { DerivedRecord } from './syntheticPairs';

/** Bump when the same inputs would give other rows. */
export const CONCAT_VERSION = 'concat-v1';

const Ref = z.object({ uri: z.string(), sha256: z.string().regex(/^[0-9a-f]{64}$/), bytes: z.number().int().nonnegative() });
const Prepared = z.object({ name: z.string(), format: z.string(), ref: Ref, rows: z.number().int().nonnegative() });

export const ConcatInput = z.object({
  name: z.string().min(1),
  build: ConcatBuild,
  /** Label in `build.from` → that dataset, prepared. */
  sources: z.record(z.string(), Prepared),
  seed: z.number().int(),
});
export type ConcatInput = z.input<typeof ConcatInput>;

/** The labels in the order their rows are joined. */
export const concatOrder = (from: Record<string, string>): string[] => Object.keys(from).sort();

/** What determines the rows: the format, the labels' sources by content, the limit and the seed. */
export function concatKey(input: z.infer<typeof ConcatInput>): string {
  return sha256Hex(
    canonicalJson({
      v: CONCAT_VERSION,
      format: input.build.format,
      parts: concatOrder(input.build.from).map((label) => [label, input.sources[label]?.ref.sha256 ?? null]),
      limit: input.build.limit ?? null,
      seed: input.seed,
    }),
  );
}

export async function buildConcat(raw: ConcatInput): Promise<{ buildKey: string; cached: boolean; record: DerivedRecord }> {
  const input = ConcatInput.parse(raw);
  const order = concatOrder(input.build.from);
  const missing = order.filter((label) => !input.sources[label]);
  if (missing.length) throw ApplicationFailure.nonRetryable(`concat "${input.name}": no prepared input for ${missing.join(', ')}`, 'InvalidDatasetBuild');
  const buildKey = concatKey(input);
  const done = await getJsonIfExists(uriOf(derivedKeys.record(buildKey)), DerivedRecord);
  if (done) return { buildKey, cached: true, record: done };

  const dir = path.join(workerEnv().workDir, 'derived', buildKey);
  await fs.rm(dir, { recursive: true, force: true });
  await fs.mkdir(dir, { recursive: true });
  try {
    // Each source, verified, appended to one file; then every row checked (and sampled) into another.
    const joined = path.join(dir, 'joined.jsonl');
    const counts: Record<string, number> = {};
    for (const label of order) {
      const src = input.sources[label]!;
      const file = path.join(dir, `part-${label}.jsonl`);
      await downloadFile(src.ref.uri, file, src.ref.sha256);
      await pipeline(createReadStream(file), createWriteStream(joined, { flags: 'a' }));
      // A prepared file ends every row with a newline; keep rows apart even if one does not.
      await fs.appendFile(joined, '\n');
      counts[label] = src.rows;
      await fs.rm(file);
      activityContext()?.heartbeat({ step: 'joined', label });
    }
    const out = path.join(dir, 'rows.jsonl');
    const rows = await normaliseFile(input.name, input.build.format, joined, out, input.build.limit, input.seed);
    const { sha256 } = await sha256File(out);
    const ref = await putFileOnce(storeKeys.dataset(sha256), out, 'application/jsonl');
    const manifest = await putBytesOnce(
      derivedKeys.manifest(buildKey),
      JSON.stringify(
        {
          build: 'concat',
          version: CONCAT_VERSION,
          format: input.build.format,
          parts: order.map((label) => ({ label, dataset: input.sources[label]!.name, sha256: input.sources[label]!.ref.sha256, rows: counts[label] })),
          limit: input.build.limit ?? null,
          seed: input.seed,
          rows,
        },
        null,
        2,
      ) + '\n',
      'application/json',
    );
    const record: DerivedRecord = {
      buildKey,
      dataset: { name: input.name, format: input.build.format, ref, rows },
      outputs: { manifest },
      counts: { ...Object.fromEntries(order.map((l) => [`from.${l}`, counts[l] ?? 0])), rows },
    };
    // Write-once: a concurrent or earlier build of the same key wins, and its record is served.
    await putBytesOnce(derivedKeys.record(buildKey), JSON.stringify(record) + '\n', 'application/json');
    return { buildKey, cached: false, record: (await getJsonIfExists(uriOf(derivedKeys.record(buildKey)), DerivedRecord)) ?? record };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}
