import type { Logger } from 'pino';
import type { Subject } from './access.js';
import type { Htpasswd } from './htpasswd.js';
import type { LoginLimiter } from './rate-limit.js';
import { isRobotToken, type RobotStore } from './robots.js';

export type LoginResult =
  | { readonly ok: true; readonly subject: Subject }
  /** `retryAfterMs` is set when the login was refused unchecked because of too many failures. */
  | { readonly ok: false; readonly retryAfterMs?: number };

/** Checks Basic credentials: robot tokens against the robot store, passwords against htpasswd. */
export class BasicLogin {
  constructor(
    private readonly htpasswd: Htpasswd,
    private readonly robots: RobotStore | undefined,
    private readonly limiter: LoginLimiter,
    private readonly logger: Logger,
  ) {}

  /** `log`: the request's logger, so that the lines carry its request id. */
  async login(
    username: string,
    password: string,
    address: string,
    log: Logger = this.logger,
  ): Promise<LoginResult> {
    const wait = this.limiter.retryAfter(username, address);
    if (wait > 0) {
      log.warn({ user: username, address }, 'login refused: too many failures');
      return { ok: false, retryAfterMs: wait };
    }
    let subject: Subject | undefined;
    if (this.robots !== undefined && isRobotToken(password)) {
      subject = await this.robots.authenticate(username, password);
    } else if (await this.htpasswd.verify(username, password)) {
      subject = { kind: 'user', name: username };
    }
    if (subject === undefined) {
      this.limiter.failure(username, address);
      log.info({ user: username, address }, 'login failed');
      return { ok: false };
    }
    this.limiter.success(username);
    return { ok: true, subject };
  }
}
