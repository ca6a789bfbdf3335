/**
 * Connections to Temporal: a local dev server, a self-hosted cluster with mTLS, or Temporal Cloud
 * with an API key. Reads no environment: the caller passes its process's settings (the worker's
 * activities/env.ts, the CLI's worker/cliSettings.ts), whose keys are the variables' names.
 */
import * as fs from 'node:fs';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';

export interface TemporalConnectionSettings {
  TEMPORAL_ADDRESS: string;
  TEMPORAL_NAMESPACE: string;
  TEMPORAL_TLS_CERT?: string | undefined;
  TEMPORAL_TLS_KEY?: string | undefined;
  TEMPORAL_API_KEY?: string | undefined;
}

function tls(s: TemporalConnectionSettings): { clientCertPair: { crt: Buffer; key: Buffer } } | true | undefined {
  if (s.TEMPORAL_TLS_CERT && s.TEMPORAL_TLS_KEY) {
    return { clientCertPair: { crt: fs.readFileSync(s.TEMPORAL_TLS_CERT), key: fs.readFileSync(s.TEMPORAL_TLS_KEY) } };
  }
  // Temporal Cloud's API keys only travel over TLS (server-verified, no client certificate).
  return s.TEMPORAL_API_KEY ? true : undefined;
}

/** For workers (the Rust core's connection). */
export async function nativeConnection(s: TemporalConnectionSettings): Promise<NativeConnection> {
  return NativeConnection.connect({ address: s.TEMPORAL_ADDRESS, tls: tls(s), apiKey: s.TEMPORAL_API_KEY });
}

/** For clients: starting, querying and describing workflows. */
export async function temporalClient(s: TemporalConnectionSettings): Promise<Client> {
  const connection = await Connection.connect({ address: s.TEMPORAL_ADDRESS, tls: tls(s), apiKey: s.TEMPORAL_API_KEY });
  return new Client({ connection, namespace: s.TEMPORAL_NAMESPACE });
}
