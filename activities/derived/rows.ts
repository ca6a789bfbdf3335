/** What the derived activities read: a prepared dataset (or any stored ref) and its JSONL rows. */
import { z } from 'zod';
import type { ArtifactRef } from '../../common/contracts';
import { getVerified } from '../store';

export const Ref = z.object({ uri: z.string(), sha256: z.string(), bytes: z.number().int() });
export const Prepared = z.object({ name: z.string(), format: z.string(), ref: Ref, rows: z.number().int() });

/** A stored JSONL file's rows, its sha256 checked. */
export async function readRows(ref: ArtifactRef): Promise<unknown[]> {
  return (await getVerified(ref))
    .toString('utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as unknown);
}
