import type { X509Certificate } from 'node:crypto';
import type { Router } from '@koa/router';
import type { Middleware } from 'koa';
import type { Logger } from 'pino';
import { TOKEN_ALGORITHMS, type AuthConfig } from '../../config/schema.js';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import type { AppState } from '../http/app.js';
import { AccessRules } from './access.js';
import { Htpasswd } from './htpasswd.js';
import { loadJwks, loadPemBundle, loadSigningKey, trustedKey, type TrustedKey } from './keys.js';
import { BasicLogin } from './login.js';
import { authMiddleware, type AuthScheme } from './middleware.js';
import { LoginLimiter } from './rate-limit.js';
import { RobotStore } from './robots.js';
import { TokenIssuer, tokenRoutes } from './token-server.js';
import { TokenVerifier } from './token-verify.js';

/** What the HTTP app needs from auth: the token endpoint (if any) and the guarding middleware. */
export interface Auth {
  /** Adds the built-in token server's routes; a no-op when it is off. */
  routes(router: Router): void;
  /** The middleware that authenticates each request and checks its route's scope. */
  middleware(router: Router): Middleware<AppState>;
}

export interface AuthDeps {
  /** Robot tokens live in the registry's storage. */
  readonly driver: StorageDriver;
  readonly logger: Logger;
  /** `http.host`, for the token realm of the built-in server. */
  readonly externalURL?: string;
}

const DEFAULT_ISSUER = 'wharf';
const DEFAULT_SERVICE = 'wharf';

/**
 * Builds auth from the `auth` section: reads htpasswd and key files now, so a missing or bad file
 * stops the start-up with its path instead of failing the first login.
 */
export async function createAuth(config: AuthConfig, deps: AuthDeps): Promise<Auth> {
  const logger = deps.logger.child({ component: 'auth' });
  const rules = new AccessRules(config.access);
  const robots = new RobotStore(deps.driver);
  const limiter = new LoginLimiter({
    perUser: config.ratelimit.peruser,
    perAddress: config.ratelimit.peraddress,
    windowMs: config.ratelimit.window,
  });
  const server = config.tokenserver?.enabled === true ? config.tokenserver : undefined;

  let scheme: AuthScheme;
  let routes: (router: Router) => void = () => undefined;
  if (config.htpasswd) {
    const htpasswd = await Htpasswd.open(config.htpasswd.path, logger);
    scheme = {
      kind: 'basic',
      realm: config.htpasswd.realm,
      login: new BasicLogin(htpasswd, robots, limiter, logger),
    };
  } else {
    const issuer = config.token?.issuer ?? server?.issuer ?? DEFAULT_ISSUER;
    const service = config.token?.service ?? server?.service ?? DEFAULT_SERVICE;
    const keys: TrustedKey[] = [];
    const roots: X509Certificate[] = [];
    if (config.token?.rootcertbundle !== undefined) {
      const bundle = await loadPemBundle(config.token.rootcertbundle);
      keys.push(...bundle.keys);
      roots.push(...bundle.roots);
    }
    if (config.token?.jwks !== undefined) keys.push(...(await loadJwks(config.token.jwks)));
    if (server?.htpasswd !== undefined && server.signingkey !== undefined) {
      const key = await loadSigningKey(server.signingkey);
      keys.push(await trustedKey(key.publicKey));
      const htpasswd = await Htpasswd.open(server.htpasswd, logger);
      const tokenIssuer = new TokenIssuer({ issuer, service, expirationMs: server.expiration, key });
      const login = new BasicLogin(htpasswd, robots, limiter, logger);
      routes = (router) => {
        tokenRoutes(router, { issuer: tokenIssuer, login, rules, realm: service, logger });
      };
      logger.info({ issuer, service, alg: key.alg, kid: key.kid }, 'token server on');
    }
    const verifier = new TokenVerifier({
      issuer,
      service,
      keys,
      roots,
      algorithms: config.token?.signingalgorithms ?? [...TOKEN_ALGORITHMS],
    });
    scheme = { kind: 'token', verifier, service, realm: config.token?.realm };
  }
  logger.info(
    { scheme: scheme.kind, rules: config.access?.rules.length ?? 'none', anonymous: rules.hasAnonymous },
    'auth on',
  );
  return {
    routes,
    middleware: (router) => authMiddleware(router, { scheme, rules, robots, externalURL: deps.externalURL }),
  };
}
