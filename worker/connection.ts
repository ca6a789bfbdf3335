/**
 * Connections to Temporal from env: a local dev server, a self-hosted cluster with mTLS, or Temporal
 * Cloud with an API key. Secrets stay in the process environment.
 */
import * as fs from 'node:fs';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { workerEnv } from '../activities/env';

function tlsFromEnv(): { clientCertPair: { crt: Buffer; key: Buffer } } | true | undefined {
  const env = workerEnv();
  if (env.TEMPORAL_TLS_CERT && env.TEMPORAL_TLS_KEY) {
    return { clientCertPair: { crt: fs.readFileSync(env.TEMPORAL_TLS_CERT), key: fs.readFileSync(env.TEMPORAL_TLS_KEY) } };
  }
  return env.TEMPORAL_API_KEY ? true : undefined;
}

export async function nativeConnection(): Promise<NativeConnection> {
  const env = workerEnv();
  return NativeConnection.connect({ address: env.TEMPORAL_ADDRESS, tls: tlsFromEnv(), apiKey: env.TEMPORAL_API_KEY });
}

export async function temporalClient(): Promise<Client> {
  const env = workerEnv();
  const connection = await Connection.connect({ address: env.TEMPORAL_ADDRESS, tls: tlsFromEnv(), apiKey: env.TEMPORAL_API_KEY });
  return new Client({ connection, namespace: env.TEMPORAL_NAMESPACE });
}
