// Composition root of `wharf agent`: config → key, journal, engine, registry client → queue → HTTP.
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import type { AgentConfig } from '../../config/agent-schema.js';
import { parseListenAddress } from '../../config/schema.js';
import { RegistryClient } from '../client/registry-client.js';
import { publicJwks, type SigningKey } from '../verify/verdict.js';
import type { Job } from './events.js';
import { Journal } from './journal.js';
import { loadOrCreateSigningKey } from './keys.js';
import { PolicySet } from './policy.js';
import { Semaphore, WorkQueue } from './queue.js';
import { DockerRunner } from './runner.js';
import { createAgentApp } from './server.js';
import { classifyFailure, Verifier, type Runner } from './verifier.js';

/** Jobs pending beyond this are refused with 503, so the registry's queue holds them instead. */
const MAX_PENDING = 10_000;
/** Jobs prepared at once (manifest fetch, referrers check); container runs are bounded separately. */
const PARALLEL_JOBS = 16;
/** How long a shutdown waits for running verifications before leaving them to the journal. */
const DRAIN_MS = 10_000;

export interface RunningAgent {
  /** http://host:port the agent listens on. */
  url: string;
  key: SigningKey;
  queue: WorkQueue;
  close(): Promise<void>;
}

export interface StartAgentOptions {
  /** Replaces the Docker engine (unit tests). */
  runner?: Runner & { ping(): Promise<void> };
}

/** The registry's host[:port] as the engine names it: `agent.registry.name`, else the URL's host. */
export function registryNameOf(config: AgentConfig['agent']['registry']): string {
  return config.name ?? new URL(config.url).host;
}

export async function startAgent(
  config: AgentConfig,
  logger: Logger,
  opts: StartAgentOptions = {},
): Promise<RunningAgent> {
  const a = config.agent;
  const statedir = resolve(a.statedir);
  const key = await loadOrCreateSigningKey(a.signingkey ?? join(statedir, 'signing-key.json'), logger);
  const journal = new Journal(statedir);
  await journal.open();
  const registryName = registryNameOf(a.registry);
  const client = new RegistryClient({
    url: a.registry.url,
    ...(a.registry.username !== undefined && { username: a.registry.username }),
    ...(a.registry.password !== undefined && { password: a.registry.password }),
    logger,
  });
  const dockerRunner =
    opts.runner ??
    new DockerRunner({
      socketPath: a.docker.socket,
      logger,
      ...(a.registry.username !== undefined && {
        auth: {
          username: a.registry.username,
          password: a.registry.password ?? '',
          serveraddress: registryName,
        },
      }),
    });
  // Containers of this state dir that a killed predecessor left running.
  const labels = {
    'dev.wharf.agent': 'true',
    'dev.wharf.agent.instance': createHash('sha256').update(statedir).digest('hex').slice(0, 16),
  };
  if (dockerRunner instanceof DockerRunner) {
    try {
      await dockerRunner.ping();
      const removed = await dockerRunner.removeLeftovers(labels);
      if (removed > 0) logger.warn({ removed }, 'removed containers a previous run left behind');
    } catch (err) {
      logger.error({ err, socket: a.docker.socket }, 'docker engine unreachable at start; jobs wait for it');
    }
  }

  const verifier = new Verifier({
    client,
    runner: dockerRunner,
    key,
    policies: new PolicySet(a.policies),
    registryName,
    runs: new Semaphore(a.concurrency),
    labels,
    logger,
  });
  const queue = new WorkQueue({
    handle: async (job: Job) => {
      const outcome = await verifier.verify(job.repository, job.digest);
      if (outcome.status === 'skipped') {
        logger.info(
          { repository: job.repository, digest: job.digest, reason: outcome.reason },
          'not verified',
        );
      }
    },
    classify: classifyFailure,
    finished: (job, failure) => (failure === undefined ? journal.done(job) : journal.fail(job, failure)),
    parallel: PARALLEL_JOBS,
    maxPending: MAX_PENDING,
    logger,
  });

  const app = createAgentApp({
    secrets: { token: a.token, secret: a.secret, insecure: a.insecure },
    jwks: publicJwks([key]),
    accept: async (jobs) => {
      if (queue.size + jobs.length > MAX_PENDING) return false;
      // On disk before the 202: the registry forgets an event once we have answered it.
      for (const job of jobs) await journal.add(job);
      for (const job of jobs) queue.enqueue(job);
      return true;
    },
    ready: async () => {
      try {
        await dockerRunner.ping();
        return undefined;
      } catch (err) {
        return err instanceof Error ? err.message : String(err);
      }
    },
    logger,
  });

  const { host, port } = parseListenAddress(a.listen);
  const handle = app.callback();
  const server: Server = createServer((req, res) => {
    void handle(req, res);
  });
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolveListen();
    });
  });
  const address = server.address() as AddressInfo;
  // Listening on every interface: loopback reaches it too, and is what a local registry uses.
  const wildcard = address.address === '::' || address.address === '0.0.0.0';
  const shownHost = wildcard
    ? '127.0.0.1'
    : address.family === 'IPv6'
      ? `[${address.address}]`
      : address.address;
  const url = `http://${shownHost}:${address.port}`;
  logger.info({ url, kid: key.kid, registry: a.registry.url, concurrency: a.concurrency }, 'agent listening');

  // Accepted before a crash or a restart: verified now (a verdict pushed just before the crash is found).
  const { jobs, broken } = await journal.pending();
  for (const b of broken) logger.error(b, 'unreadable journal entry moved to failed/');
  if (jobs.length > 0) logger.info({ jobs: jobs.length }, 'replaying unfinished jobs from the journal');
  for (const job of jobs) queue.enqueue(job);

  return {
    url,
    key,
    queue,
    close: async () => {
      await new Promise<void>((resolveClose) => {
        server.close(() => {
          resolveClose();
        });
        server.closeIdleConnections();
      });
      // Runs in progress are cut short (their jobs stay in the journal), so this is quick.
      if (dockerRunner instanceof DockerRunner) await dockerRunner.shutdown();
      await queue.close(DRAIN_MS);
    },
  };
}
