import { randomBytes } from 'node:crypto';
import type { Router } from '@koa/router';
import { SignJWT } from 'jose';
import type { Context } from 'koa';
import type { Logger } from 'pino';
import { writeError } from '../http/errors.js';
import { isValidName } from '../registry/names.js';
import { ALL_ACTIONS, ANONYMOUS, type AccessAction, type AccessRules, type Subject } from './access.js';
import { parseAuthorization } from './credentials.js';
import type { SigningKey } from './keys.js';
import type { BasicLogin } from './login.js';
import { formatScope, parseScopes, type ResourceActions } from './scopes.js';

export const TOKEN_PATH = '/auth/token';
/** An OAuth2 form body is a few hundred bytes; anything far larger is not one. */
const FORM_LIMIT = 16 * 1024;

export interface IssuedToken {
  readonly token: string;
  /** Seconds. */
  readonly expiresIn: number;
  readonly issuedAt: string;
}

export interface TokenIssuerOptions {
  readonly issuer: string;
  readonly service: string;
  readonly expirationMs: number;
  readonly key: SigningKey;
}

/** The `sub` claim: a user's name, `robot:<id>` (no htpasswd name holds a colon), or empty. */
export function subjectClaim(subject: Subject): string {
  switch (subject.kind) {
    case 'anonymous':
      return '';
    case 'user':
      return subject.name;
    case 'robot':
      return `robot:${subject.id}`;
  }
}

/** Signs registry tokens in the Docker token spec's format, with `kid` set as Distribution expects. */
export class TokenIssuer {
  constructor(readonly options: TokenIssuerOptions) {}

  async issue(subject: Subject, access: readonly ResourceActions[], now = Date.now()): Promise<IssuedToken> {
    const iat = Math.floor(now / 1000);
    const expiresIn = Math.max(1, Math.round(this.options.expirationMs / 1000));
    const token = await new SignJWT({ access: access.map((a) => ({ ...a, actions: [...a.actions] })) })
      .setProtectedHeader({ alg: this.options.key.alg, typ: 'JWT', kid: this.options.key.kid })
      .setIssuer(this.options.issuer)
      .setSubject(subjectClaim(subject))
      .setAudience(this.options.service)
      .setIssuedAt(iat)
      .setNotBefore(iat)
      .setExpirationTime(iat + expiresIn)
      .setJti(randomBytes(16).toString('hex'))
      .sign(this.options.key.privateKey);
    return { token, expiresIn, issuedAt: new Date(iat * 1000).toISOString() };
  }
}

/**
 * What the token server grants: of each requested scope, only the actions the access rules allow the
 * subject. `*` asks for every action. The catalog goes to anyone who logged in; unknown resource
 * types and invalid names get nothing. Refusal is silent, as the spec asks: the token just lacks it.
 */
export function grantScopes(
  rules: AccessRules,
  subject: Subject,
  requested: readonly ResourceActions[],
): ResourceActions[] {
  const repositories = new Map<string, Set<AccessAction>>();
  let catalog = false;
  for (const scope of requested) {
    if (scope.type === 'registry' && scope.name === 'catalog') {
      catalog ||= subject.kind !== 'anonymous' && scope.actions.includes('*');
      continue;
    }
    if (scope.type !== 'repository' || !isValidName(scope.name)) continue;
    const wanted = scope.actions.includes('*')
      ? ALL_ACTIONS
      : ALL_ACTIONS.filter((action) => scope.actions.includes(action));
    const allowed = rules.allowed(subject, scope.name);
    const granted = repositories.get(scope.name) ?? new Set<AccessAction>();
    for (const action of wanted) if (allowed.has(action)) granted.add(action);
    repositories.set(scope.name, granted);
  }
  const out: ResourceActions[] = [];
  for (const [name, actions] of repositories) {
    if (actions.size > 0)
      out.push({ type: 'repository', name, actions: ALL_ACTIONS.filter((a) => actions.has(a)) });
  }
  if (catalog) out.push({ type: 'registry', name: 'catalog', actions: ['*'] });
  return out;
}

export interface TokenEndpointDeps {
  readonly issuer: TokenIssuer;
  readonly login: BasicLogin;
  readonly rules: AccessRules;
  /** Realm of the Basic challenge for bad credentials. */
  readonly realm: string;
  readonly logger: Logger;
}

function queryValues(ctx: Context, key: string): string[] {
  const value = ctx.query[key];
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

async function readForm(ctx: Context): Promise<URLSearchParams | undefined> {
  if (Number(ctx.get('Content-Length') || 0) > FORM_LIMIT) return undefined;
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > FORM_LIMIT) {
      ctx.req.resume();
      return undefined;
    }
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

/**
 * The built-in token server: `GET /auth/token?service=&scope=` with optional Basic credentials (users
 * from htpasswd, robot tokens), as Docker calls it, and the OAuth2 password grant (`POST`) that
 * containerd and buildkit try first. Without credentials the caller gets what anonymous rules allow.
 */
export function tokenRoutes(router: Router, deps: TokenEndpointDeps): void {
  const { issuer, login, rules, logger } = deps;
  const service = issuer.options.service;
  // The request's logger (the app sets it), so that these lines carry the request id.
  const requestLog = (ctx: Context): Logger => (ctx.state as { log?: Logger }).log ?? logger;

  /** Checks Basic-style credentials; answers the failure itself and returns undefined. */
  const authenticate = async (ctx: Context, username: string, password: string) => {
    const result = await login.login(username, password, ctx.ip, requestLog(ctx));
    if (result.ok) return result.subject;
    if (result.retryAfterMs !== undefined) {
      ctx.set('Retry-After', String(Math.ceil(result.retryAfterMs / 1000)));
      writeError(ctx, 'TOOMANYREQUESTS', 'too many failed logins, retry later');
    } else {
      ctx.set('WWW-Authenticate', `Basic realm="${deps.realm.replace(/["\\]/g, '')}"`);
      writeError(ctx, 'UNAUTHORIZED', 'invalid username or password');
    }
    return undefined;
  };

  const wrongService = (ctx: Context, requested: string | undefined): boolean => {
    if (requested === undefined || requested === '' || requested === service) return false;
    writeError(ctx, 'TOKEN_REQUEST_INVALID', `this token server issues tokens for "${service}" only`);
    return true;
  };

  const grant = async (ctx: Context, subject: Subject, scopes: readonly ResourceActions[]) => {
    const granted = grantScopes(rules, subject, scopes);
    if (subject.kind !== 'anonymous') ctx.state.user = subjectClaim(subject);
    const issued = await issuer.issue(subject, granted);
    requestLog(ctx).info(
      { sub: subjectClaim(subject), kind: subject.kind, granted: granted.map(formatScope) },
      'token issued',
    );
    return { granted, issued };
  };

  const noStore = (ctx: Context) => {
    ctx.set('Cache-Control', 'no-store');
    ctx.set('Pragma', 'no-cache');
  };

  router.get(TOKEN_PATH, async (ctx) => {
    if (wrongService(ctx, queryValues(ctx, 'service')[0])) return;
    const credentials = parseAuthorization(ctx.get('Authorization') || undefined);
    let subject: Subject | undefined = ANONYMOUS;
    if (credentials.scheme === 'basic') {
      subject = await authenticate(ctx, credentials.username, credentials.password);
      if (subject === undefined) return;
    } else if (credentials.scheme === 'malformed') {
      writeError(ctx, 'UNAUTHORIZED', 'unreadable Authorization header');
      return;
    }
    const { issued } = await grant(ctx, subject, parseScopes(queryValues(ctx, 'scope')));
    noStore(ctx);
    ctx.body = {
      token: issued.token,
      access_token: issued.token,
      expires_in: issued.expiresIn,
      issued_at: issued.issuedAt,
    };
  });

  router.post(TOKEN_PATH, async (ctx) => {
    const form = await readForm(ctx);
    if (form === undefined) {
      writeError(ctx, 'TOKEN_REQUEST_INVALID', 'the form body is too large');
      return;
    }
    if (wrongService(ctx, form.get('service') ?? undefined)) return;
    if (form.get('grant_type') !== 'password') {
      writeError(ctx, 'TOKEN_REQUEST_INVALID', 'only grant_type=password is supported');
      return;
    }
    const subject = await authenticate(ctx, form.get('username') ?? '', form.get('password') ?? '');
    if (subject === undefined) return;
    const { granted, issued } = await grant(ctx, subject, parseScopes(form.getAll('scope')));
    noStore(ctx);
    ctx.body = {
      access_token: issued.token,
      scope: granted.map(formatScope).join(' '),
      expires_in: issued.expiresIn,
      issued_at: issued.issuedAt,
    };
  });
}
