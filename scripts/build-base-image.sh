#!/usr/bin/env bash
# Builds a local stand-in for node:20-bookworm-slim, for the Dockerfile's BASE_IMAGE on machines that
# cannot pull images. It is made from what the machine has: the host's node and npm, the shared libraries
# node links, Debian's static busybox as /bin/sh and coreutils (RUN steps need a shell), the host's CA
# certificates, /etc/passwd and /etc/group, and /tmp; packed with tar and loaded with `docker import`.
# Takes seconds; a debootstrap root file system would take minutes and download ~40 MB.
#
# Usage: scripts/build-base-image.sh [TAG]     (default: wharf-image-test/node-base:20)
# Needs: docker, node >= 20 with npm, busybox-static. Prints the tag on stdout when done.
set -euo pipefail

tag="${1:-wharf-image-test/node-base:20}"

die() {
  echo "build-base-image: $*" >&2
  exit 1
}

node_bin="$(readlink -f "$(command -v node)")" || die "node not found on PATH"
node_version="$(node -p 'process.versions.node')"
[ "${node_version%%.*}" -ge 20 ] || die "node >= 20 needed, found $node_version"
npm_dir="$(npm root -g 2>/dev/null)/npm"
[ -f "$npm_dir/bin/npm-cli.js" ] || die "npm not found at $npm_dir"
busybox=/bin/busybox
# A dynamically linked busybox (package busybox) would need its own libraries; busybox-static does not.
if ! "$busybox" true 2>/dev/null || ldd "$busybox" >/dev/null 2>&1; then
  die "$busybox is missing or not static (apt-get install busybox-static)"
fi
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca_bundle" ] || die "$ca_bundle not found (apt-get install ca-certificates)"

root="$(mktemp -d /tmp/wharf-base-rootfs.XXXXXX)"
trap 'rm -rf "$root"' EXIT
chmod 755 "$root"

# Node and npm where the official image has them.
install -D -m 755 "$node_bin" "$root/usr/local/bin/node"
mkdir -p "$root/usr/local/lib/node_modules"
cp -a "$npm_dir" "$root/usr/local/lib/node_modules/npm"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"

# The libraries node links, at the paths the loader looks them up by (symlinks resolved).
ldd "$node_bin" | grep -o '/[^ ]*' | sort -u | while read -r lib; do
  install -D -m 755 "$(readlink -f "$lib")" "$root$lib"
done

# busybox applets as symlinks: sh, env (npm's shebang), id, chown, sed, ...
install -D -m 755 "$busybox" "$root/bin/busybox"
"$busybox" --list-full | grep -vx linuxrc | while read -r applet; do
  [ -e "$root/$applet" ] || [ -L "$root/$applet" ] && continue
  mkdir -p "$(dirname "$root/$applet")"
  ln -s /bin/busybox "$root/$applet"
done

mkdir -p "$root/etc/ssl/certs" "$root/root" "$root/tmp" "$root/var/tmp" "$root/proc" "$root/sys" "$root/dev"
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 700 "$root/root"
cp "$ca_bundle" "$root/etc/ssl/certs/ca-certificates.crt"
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
cat >"$root/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files dns
EOF

# A smoke test before import: node and npm start inside the tree with nothing from the host.
if command -v chroot >/dev/null 2>&1; then
  chroot "$root" /usr/local/bin/node -e 'require("node:os")' || die "node does not start in the new root"
fi

tar --numeric-owner --owner=0 --group=0 -C "$root" -cf - . |
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV NODE_VERSION=$node_version" \
    --change 'CMD ["node"]' \
    --message "node $node_version from the host, busybox, CA certificates (scripts/build-base-image.sh)" \
    - "$tag" >/dev/null
echo "$tag"
