import type { Config } from '../config/schema.js';

/**
 * Keys the schema accepts (so configs written for later releases and for Distribution load) but that
 * this build does not act on yet. A key whose absence would weaken security stops the server; the
 * rest are logged. Each entry goes when its feature lands.
 */
export function notYetImplemented(config: Config): { errors: string[]; warnings: string[] } {
  const errors: string[] = [];
  const warnings: string[] = [];
  if (config.http.prefix !== undefined) warnings.push('http.prefix is not implemented yet and is ignored');
  if (config.validation.manifests.urls) {
    warnings.push('validation.manifests.urls is not implemented yet; foreign layer URLs are not checked');
  }
  return { errors, warnings };
}
