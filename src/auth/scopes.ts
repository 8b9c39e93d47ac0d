import type { AccessAction } from './access.js';

/** One entry of a token's `access` claim, and one requested scope. */
export interface ResourceActions {
  readonly type: string;
  readonly name: string;
  readonly actions: readonly string[];
}

export function accessKey(type: string, name: string): string {
  return `${type}:${name}`;
}

/** What a request needs before its route may run. */
export type Requirement =
  /** The token endpoint and everything outside `/v2`. */
  | { readonly kind: 'public' }
  /** `GET /v2/` and unknown `/v2` paths: any identity with credentials. */
  | { readonly kind: 'authenticated' }
  /** `GET /v2/_catalog`: the `registry:catalog:*` scope; the list is filtered to pullable names. */
  | { readonly kind: 'catalog' }
  | { readonly kind: 'repository'; readonly name: string; readonly actions: readonly AccessAction[] };

/** The scopes a requirement asks a token server for, as a challenge's `scope` parameter lists them. */
export function requiredScopes(requirement: Requirement): ResourceActions[] {
  switch (requirement.kind) {
    case 'public':
    case 'authenticated':
      return [];
    case 'catalog':
      return [{ type: 'registry', name: 'catalog', actions: ['*'] }];
    case 'repository':
      return [{ type: 'repository', name: requirement.name, actions: requirement.actions }];
  }
}

export function formatScope(scope: ResourceActions): string {
  return `${scope.type}:${scope.name}:${scope.actions.join(',')}`;
}

/**
 * Parses `scope` query parameters (each may hold several, space-separated) of the form
 * `type[(class)]:name:action,action`. The name may itself hold colons; malformed scopes are dropped.
 */
export function parseScopes(params: readonly string[]): ResourceActions[] {
  const scopes: ResourceActions[] = [];
  for (const param of params) {
    for (const scope of param.split(' ')) {
      const first = scope.indexOf(':');
      const last = scope.lastIndexOf(':');
      if (first <= 0 || last === first) continue;
      const type = scope.slice(0, first).replace(/\(.*\)$/, '');
      const name = scope.slice(first + 1, last);
      const actions = scope
        .slice(last + 1)
        .split(',')
        .filter((a) => a !== '');
      if (name === '' || actions.length === 0) continue;
      scopes.push({ type, name, actions });
    }
  }
  return scopes;
}
