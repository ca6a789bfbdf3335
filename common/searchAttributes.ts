/** Typed search-attribute keys (all Keyword), for workflows, the client and stack setup. */
import { defineSearchAttributeKey, SearchAttributeType, type SearchAttributePair } from '@temporalio/common';
import type { SearchAttributeName } from './config';

export const SA_KEYS = {
  Lineage: defineSearchAttributeKey('Lineage', SearchAttributeType.KEYWORD),
  BaseModel: defineSearchAttributeKey('BaseModel', SearchAttributeType.KEYWORD),
  SftDataset: defineSearchAttributeKey('SftDataset', SearchAttributeType.KEYWORD),
  Algorithm: defineSearchAttributeKey('Algorithm', SearchAttributeType.KEYWORD),
  PreferenceDataset: defineSearchAttributeKey('PreferenceDataset', SearchAttributeType.KEYWORD),
} as const;

export function searchAttributePairs(attrs: Partial<Record<SearchAttributeName, string>>): SearchAttributePair[] {
  return (Object.keys(attrs) as SearchAttributeName[])
    .filter((k) => attrs[k] !== undefined)
    .map((k) => ({ key: SA_KEYS[k], value: attrs[k] as string }));
}
