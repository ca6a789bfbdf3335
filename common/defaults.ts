/**
 * Defaults that more than one process kind needs (the worker, the CLI, the local-stack scripts), each
 * written once. Pure module: no environment reads here — each process kind's settings module reads
 * its variables and falls back to these. (The judge model's default lives with the spec:
 * `common/spec.ts`.)
 */

/** The local stack listens on loopback only (it has no authentication). */
export const DEFAULT_LOCAL_HOST = '127.0.0.1';

export const DEFAULT_TEMPORAL_PORT = 7233;
export const DEFAULT_TEMPORAL_UI_PORT = 8233;
/** Where workers and the CLI find Temporal when nothing says otherwise: the local dev server. */
export const DEFAULT_TEMPORAL_ADDRESS = `${DEFAULT_LOCAL_HOST}:${DEFAULT_TEMPORAL_PORT}`;
export const DEFAULT_TEMPORAL_UI_URL = `http://${DEFAULT_LOCAL_HOST}:${DEFAULT_TEMPORAL_UI_PORT}`;
export const DEFAULT_TEMPORAL_NAMESPACE = 'default';

/** The object store's bucket and region (the local S3 server ignores the region; the SDK needs one). */
export const DEFAULT_S3_BUCKET = 'valuedrift';
export const DEFAULT_S3_REGION = 'us-east-1';
