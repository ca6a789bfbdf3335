/**
 * Registers the custom search attributes the lineage workflows set (as Keyword: exact-match filters
 * in the UI, e.g. `Lineage = "demo" AND Algorithm = "dpo"`). `temporal server start-dev` registers
 * them only when it creates a fresh database, so an existing one gets them here.
 */
import { z } from 'zod';

import { SEARCH_ATTRIBUTES } from '../common/config';
import type { LogFn } from './proc';
import { type TemporalCliTarget, temporalCli } from './temporalCli';

const SearchAttributeList = z.object({ customAttributes: z.record(z.string(), z.string()).optional() });

/** Creates the missing ones; refuses (saying how to start over) when one exists with another type. */
export async function ensureSearchAttributes(target: TemporalCliTarget, opts: { dbFile: string; log: LogFn }): Promise<void> {
  const list = await temporalCli(target, ['operator', 'search-attribute', 'list', '-o', 'json'], 30_000);
  if (list.code !== 0) throw new Error(`temporal: listing search attributes failed: ${list.stderr || list.stdout}`);
  const existing = SearchAttributeList.parse(JSON.parse(list.stdout)).customAttributes ?? {};
  const wrongType = SEARCH_ATTRIBUTES.filter((n) => existing[n] !== undefined && existing[n] !== 'INDEXED_VALUE_TYPE_KEYWORD');
  if (wrongType.length > 0) {
    throw new Error(
      `temporal: search attributes ${wrongType.join(', ')} exist with another type than Keyword ` +
        `(${wrongType.map((n) => existing[n]).join(', ')}); delete ${opts.dbFile} to start over`,
    );
  }
  const missing = SEARCH_ATTRIBUTES.filter((n) => existing[n] === undefined);
  if (missing.length === 0) return;
  opts.log(`temporal: registering search attributes ${missing.join(', ')}`);
  const create = await temporalCli(
    target,
    ['operator', 'search-attribute', 'create', ...missing.flatMap((n) => ['--name', n]), '--type', 'Keyword'],
    30_000,
  );
  if (create.code !== 0) throw new Error(`temporal: creating search attributes failed: ${create.stderr || create.stdout}`);
}
