/**
 * Domain errors of the registry core. Each is named after its condition and carries the error kind the
 * HTTP layer's table (`src/http/errors.ts`) maps to a wire code and status; the core knows no HTTP.
 */
export type ErrorKind =
  | 'BLOB_UNKNOWN'
  | 'BLOB_UPLOAD_INVALID'
  | 'BLOB_UPLOAD_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_BLOB_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'MANIFEST_TOO_LARGE'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'SIZE_INVALID'
  | 'TAG_INVALID'
  | 'RANGE_INVALID'
  | 'CHUNK_OUT_OF_ORDER'
  | 'PAGINATION_NUMBER_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'INSUFFICIENT_SCOPE'
  | 'TOKEN_REQUEST_INVALID'
  | 'UNSUPPORTED'
  | 'TOOMANYREQUESTS'
  | 'UNAVAILABLE'
  | 'ROUTE_UNKNOWN'
  | 'UNKNOWN';

export abstract class RegistryError extends Error {
  abstract readonly kind: ErrorKind;
  constructor(
    message?: string,
    readonly detail?: unknown,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

export class BlobUnknownError extends RegistryError {
  readonly kind = 'BLOB_UNKNOWN';
}
export class BlobUploadInvalidError extends RegistryError {
  readonly kind = 'BLOB_UPLOAD_INVALID';
}
export class BlobUploadUnknownError extends RegistryError {
  readonly kind = 'BLOB_UPLOAD_UNKNOWN';
}
export class DigestInvalidError extends RegistryError {
  readonly kind = 'DIGEST_INVALID';
}
export class ManifestBlobUnknownError extends RegistryError {
  readonly kind = 'MANIFEST_BLOB_UNKNOWN';
}
export class ManifestInvalidError extends RegistryError {
  readonly kind = 'MANIFEST_INVALID';
}
export class ManifestUnknownError extends RegistryError {
  readonly kind = 'MANIFEST_UNKNOWN';
}
export class ManifestTooLargeError extends RegistryError {
  readonly kind = 'MANIFEST_TOO_LARGE';
}
export class NameInvalidError extends RegistryError {
  readonly kind = 'NAME_INVALID';
}
export class NameUnknownError extends RegistryError {
  readonly kind = 'NAME_UNKNOWN';
}
export class SizeInvalidError extends RegistryError {
  readonly kind = 'SIZE_INVALID';
}
export class TagInvalidError extends RegistryError {
  readonly kind = 'TAG_INVALID';
}
/** An upload chunk that does not start where the upload ends. */
export class ChunkOutOfOrderError extends RegistryError {
  readonly kind = 'CHUNK_OUT_OF_ORDER';
}
export class PaginationNumberInvalidError extends RegistryError {
  readonly kind = 'PAGINATION_NUMBER_INVALID';
}
export class UnsupportedError extends RegistryError {
  readonly kind = 'UNSUPPORTED';
}
