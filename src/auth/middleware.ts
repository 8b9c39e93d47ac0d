import type { Router } from '@koa/router';
import type { Middleware, ParameterizedContext } from 'koa';
import { LRUCache } from 'lru-cache';
import type { AppState } from '../http/app.js';
import { writeError } from '../http/errors.js';
import { isValidName } from '../registry/names.js';
import { ALL_ACTIONS, ANONYMOUS, type AccessAction, type AccessRules, type Subject } from './access.js';
import { parseAuthorization } from './credentials.js';
import type { BasicLogin } from './login.js';
import type { RobotStore } from './robots.js';
import { accessKey, formatScope, requiredScopes, type Requirement } from './scopes.js';
import { subjectClaim, TOKEN_PATH } from './token-server.js';
import { TokenRejectedError, type TokenVerifier, type VerifiedToken } from './token-verify.js';

/** How requests prove who they are: Basic against htpasswd (and robots), or bearer tokens. */
export type AuthScheme =
  | { readonly kind: 'basic'; readonly realm: string; readonly login: BasicLogin }
  | {
      readonly kind: 'token';
      readonly verifier: TokenVerifier;
      readonly service: string;
      /** The token server's URL; undefined: the built-in one at this host's /auth/token. */
      readonly realm: string | undefined;
    };

export interface AuthMiddlewareDeps {
  readonly scheme: AuthScheme;
  readonly rules: AccessRules;
  readonly robots: RobotStore | undefined;
  /** `http.host`: the base of the derived token realm. */
  readonly externalURL: string | undefined;
}

const PUBLIC: Requirement = { kind: 'public' };
const AUTHENTICATED: Requirement = { kind: 'authenticated' };
const CATALOG: Requirement = { kind: 'catalog' };
const PULL: readonly AccessAction[] = ['pull'];
const PULL_PUSH: readonly AccessAction[] = ['pull', 'push'];
const DELETE: readonly AccessAction[] = ['delete'];

/**
 * What the route the router will pick for this request requires. The router itself is asked
 * (`router.match`, the same captures and decoding), so the name checked is the name served.
 * Repository routes need `pull` to read, `pull,push` to write (uploads: always) and `delete` to delete,
 * as in Distribution.
 */
export function requirementOf(router: Router, method: string, path: string): Requirement {
  const layer = router.match(path, method).pathAndMethod.find((l) => l.methods.length > 0);
  const route = layer?.path;
  if (layer === undefined || typeof route !== 'string') {
    return /^\/v2(\/|$)/i.test(path) ? AUTHENTICATED : PUBLIC;
  }
  if (route === TOKEN_PATH || !route.startsWith('/v2')) return PUBLIC;
  if (route === '/v2/_catalog') return CATALOG;
  if (!route.startsWith('/v2/*name/')) return AUTHENTICATED;
  const name = layer.params(path, layer.captures(path)).name ?? '';
  if (route.startsWith('/v2/*name/blobs/uploads')) return { kind: 'repository', name, actions: PULL_PUSH };
  switch (method.toUpperCase()) {
    case 'GET':
    case 'HEAD':
      return { kind: 'repository', name, actions: PULL };
    case 'DELETE':
      return { kind: 'repository', name, actions: DELETE };
    default:
      return { kind: 'repository', name, actions: PULL_PUSH };
  }
}

type Ctx = ParameterizedContext<AppState>;

/** Who is calling, once credentials checked out. */
type Caller =
  | { readonly kind: 'subject'; readonly subject: Subject }
  | { readonly kind: 'token'; readonly token: VerifiedToken };

const ANONYMOUS_CALLER: Caller = { kind: 'subject', subject: ANONYMOUS };

const quote = (value: string) => `"${value.replace(/["\\]/g, '')}"`;

/**
 * Authenticates every request and checks that the caller holds what its route requires, before the
 * router runs. No credentials where some are needed: 401 with the scheme's challenge. Credentials
 * that do not check out: 401. Valid credentials without the right: 403 DENIED (Basic), or 401 with
 * `error="insufficient_scope"` (tokens: the client may fetch a broader token; Docker shows `denied`).
 */
export function authMiddleware(router: Router, deps: AuthMiddlewareDeps): Middleware<AppState> {
  const { scheme, rules, robots } = deps;
  // The same few paths come again and again (a tag pulled by many); matching them is the costly part.
  const requirements = new LRUCache<string, Requirement>({ max: 10_000 });
  const requirementFor = (method: string, path: string): Requirement => {
    const key = `${method} ${path}`;
    let requirement = requirements.get(key);
    if (requirement === undefined) {
      requirement = requirementOf(router, method, path);
      requirements.set(key, requirement);
    }
    return requirement;
  };

  const challenge = (ctx: Ctx, requirement: Requirement, error?: string): void => {
    if (scheme.kind === 'basic') {
      ctx.set('WWW-Authenticate', `Basic realm=${quote(scheme.realm)}`);
      return;
    }
    const realm =
      scheme.realm ??
      `${deps.externalURL?.replace(/\/+$/, '') ?? `${ctx.protocol}://${ctx.host}`}${TOKEN_PATH}`;
    let value = `Bearer realm=${quote(realm)},service=${quote(scheme.service)}`;
    const scopes = requiredScopes(requirement);
    if (scopes.length > 0) value += `,scope=${quote(scopes.map(formatScope).join(' '))}`;
    if (error !== undefined) value += `,error=${quote(error)}`;
    ctx.set('WWW-Authenticate', value);
  };

  /** Checks the credentials; answers a failure itself and returns undefined. */
  const identify = async (ctx: Ctx, requirement: Requirement): Promise<Caller | undefined> => {
    const credentials = parseAuthorization(ctx.get('Authorization') || undefined);
    if (credentials.scheme === 'none') return ANONYMOUS_CALLER;
    if (scheme.kind === 'basic' && credentials.scheme === 'basic') {
      const result = await scheme.login.login(
        credentials.username,
        credentials.password,
        ctx.ip,
        ctx.state.log,
      );
      if (result.ok) return { kind: 'subject', subject: result.subject };
      if (result.retryAfterMs !== undefined) {
        ctx.set('Retry-After', String(Math.ceil(result.retryAfterMs / 1000)));
        writeError(ctx, 'TOOMANYREQUESTS', 'too many failed logins, retry later');
        return undefined;
      }
      challenge(ctx, requirement);
      writeError(ctx, 'UNAUTHORIZED', 'invalid username or password');
      return undefined;
    }
    if (scheme.kind === 'token' && credentials.scheme === 'bearer') {
      try {
        return { kind: 'token', token: await scheme.verifier.verify(credentials.token) };
      } catch (err) {
        if (!(err instanceof TokenRejectedError)) throw err;
        ctx.state.log.info({ reason: err.reason }, 'token rejected');
        challenge(ctx, requirement, 'invalid_token');
        writeError(ctx, 'UNAUTHORIZED', `invalid token: ${err.reason}`);
        return undefined;
      }
    }
    challenge(ctx, requirement);
    writeError(ctx, 'UNAUTHORIZED', `expected ${scheme.kind === 'basic' ? 'Basic' : 'Bearer'} credentials`);
    return undefined;
  };

  /** The actions `caller` may take on repository `name`, anonymous grants included. */
  const actionsOn = (caller: Caller, name: string): Set<AccessAction> => {
    if (caller.kind === 'subject') return rules.allowed(caller.subject, name);
    const granted = rules.allowed(ANONYMOUS, name);
    const claimed = caller.token.access.get(accessKey('repository', name));
    if (claimed !== undefined) {
      for (const action of ALL_ACTIONS) if (claimed.has(action) || claimed.has('*')) granted.add(action);
    }
    return granted;
  };

  /** The rules' subject behind a caller, to filter the catalog by what it may pull. */
  const subjectOf = async (caller: Caller): Promise<Subject> => {
    if (caller.kind === 'subject') return caller.subject;
    const sub = caller.token.subject;
    if (sub === '') return ANONYMOUS;
    if (sub.startsWith('robot:')) return (await robots?.subject(sub.slice('robot:'.length))) ?? ANONYMOUS;
    return { kind: 'user', name: sub };
  };

  const refuse = (ctx: Ctx, requirement: Requirement, caller: Caller): void => {
    const anonymous = caller.kind === 'subject' && caller.subject.kind === 'anonymous';
    if (anonymous) {
      challenge(ctx, requirement);
      writeError(ctx, 'UNAUTHORIZED');
    } else if (scheme.kind === 'token') {
      challenge(ctx, requirement, 'insufficient_scope');
      writeError(ctx, 'INSUFFICIENT_SCOPE');
    } else {
      writeError(ctx, 'DENIED');
    }
  };

  /** A cross-repository mount reads the source: without pull on it, the POST becomes a plain upload. */
  const guardMount = (ctx: Ctx, caller: Caller): void => {
    if (ctx.method !== 'POST' || ctx.query.mount === undefined) return;
    const from = ctx.query.from;
    if (typeof from === 'string' && isValidName(from) && actionsOn(caller, from).has('pull')) return;
    const query = { ...ctx.query };
    delete query.mount;
    delete query.from;
    ctx.query = query;
  };

  return async (ctx, next) => {
    const requirement = requirementFor(ctx.method, ctx.path);
    if (requirement.kind === 'public') {
      await next();
      return;
    }
    const caller = await identify(ctx, requirement);
    if (caller === undefined) return;
    const isAnonymous = caller.kind === 'subject' && caller.subject.kind === 'anonymous';
    if (!isAnonymous)
      ctx.state.user = caller.kind === 'token' ? caller.token.subject : subjectClaim(caller.subject);
    switch (requirement.kind) {
      case 'authenticated':
        if (isAnonymous) {
          refuse(ctx, requirement, caller);
          return;
        }
        break;
      case 'catalog': {
        const granted =
          caller.kind === 'token'
            ? caller.token.access.get('registry:catalog')?.has('*') === true
            : !isAnonymous;
        if (!granted) {
          refuse(ctx, requirement, caller);
          return;
        }
        const subject = await subjectOf(caller);
        ctx.state.canPull = (name) => rules.allowed(subject, name).has('pull');
        break;
      }
      case 'repository': {
        const allowed = actionsOn(caller, requirement.name);
        if (!requirement.actions.every((action) => allowed.has(action))) {
          refuse(ctx, requirement, caller);
          return;
        }
        guardMount(ctx, caller);
        break;
      }
    }
    await next();
  };
}
