import type { AccessAction, AuthConfig } from '../../config/schema.js';

export type { AccessAction };
export const ALL_ACTIONS: readonly AccessAction[] = ['pull', 'push', 'delete'];

/**
 * Compiles a repository glob: `*` matches within one path component, `**` across components
 * (`team/**` matches `team/a` and `team/a/b`, not `team`). Everything else is literal.
 */
export function compileGlob(glob: string): RegExp {
  let source = '';
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i] ?? '';
    if (ch === '*' && glob[i + 1] === '*') {
      source += '.*';
      i++;
    } else if (ch === '*') {
      source += '[^/]*';
    } else {
      source += ch.replace(/[.\-/]/g, '\\$&');
    }
  }
  return new RegExp(`^${source}$`);
}

/** Who is asking, as far as access rules care. */
export type Subject =
  | { readonly kind: 'anonymous' }
  | { readonly kind: 'user'; readonly name: string }
  | {
      readonly kind: 'robot';
      readonly id: string;
      readonly name: string;
      readonly repositories: readonly string[];
      readonly actions: readonly AccessAction[];
    };

export const ANONYMOUS: Subject = { kind: 'anonymous' };

interface CompiledRule {
  readonly repositories: readonly RegExp[];
  readonly users: ReadonlySet<string>;
  readonly groups: readonly string[];
  readonly actions: readonly AccessAction[];
  readonly anonymous: boolean;
}

/**
 * `auth.access`: additive rules. A rule grants its actions on its repository globs to its users
 * (`*`: every authenticated user) and to the members of its groups; `anonymous: true` also lets anyone
 * pull them without credentials. Without an `auth.access` section every authenticated user may do
 * everything, as with Distribution's htpasswd. A robot token carries its own globs and actions.
 */
export class AccessRules {
  private readonly rules: readonly CompiledRule[] | undefined;
  private readonly groups: ReadonlyMap<string, ReadonlySet<string>>;
  private readonly robotGlobs = new WeakMap<Subject, readonly RegExp[]>();

  constructor(config: AuthConfig['access']) {
    this.groups = new Map(Object.entries(config?.groups ?? {}).map(([g, members]) => [g, new Set(members)]));
    this.rules = config?.rules.map((rule) => ({
      repositories: rule.repositories.map(compileGlob),
      users: new Set(rule.users),
      groups: rule.groups,
      actions: rule.actions,
      anonymous: rule.anonymous,
    }));
  }

  /** Whether some rule lets anyone pull something: then anonymous requests are worth serving. */
  get hasAnonymous(): boolean {
    return this.rules?.some((rule) => rule.anonymous) ?? false;
  }

  /** The actions `subject` may take on repository `name`. */
  allowed(subject: Subject, name: string): Set<AccessAction> {
    const granted = new Set<AccessAction>();
    if (subject.kind === 'robot') {
      let globs = this.robotGlobs.get(subject);
      if (globs === undefined) {
        globs = subject.repositories.map(compileGlob);
        this.robotGlobs.set(subject, globs);
      }
      if (globs.some((re) => re.test(name))) {
        for (const action of subject.actions) granted.add(action);
      }
    }
    if (this.rules === undefined) {
      if (subject.kind === 'user') for (const action of ALL_ACTIONS) granted.add(action);
      return granted;
    }
    for (const rule of this.rules) {
      if (!rule.repositories.some((re) => re.test(name))) continue;
      // What anyone may pull without credentials, anyone with credentials may pull too.
      if (rule.anonymous) granted.add('pull');
      if (subject.kind === 'user' && this.applies(rule, subject.name)) {
        for (const action of rule.actions) granted.add(action);
      }
    }
    return granted;
  }

  private applies(rule: CompiledRule, user: string): boolean {
    if (rule.users.has(user) || rule.users.has('*')) return true;
    return rule.groups.some((group) => this.groups.get(group)?.has(user) === true);
  }
}
