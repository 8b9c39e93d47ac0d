#!/usr/bin/env bash
# Brings up a single-node Ceph cluster (one monitor, one memstore OSD, no manager) and radosgw, all on
# 127.0.0.1, as the S3 server for tests. Usage:
#
#   eval "$(test/s3/start-rgw.sh [DIR])"      # DIR defaults to /tmp/wharf-rgw
#
# Progress goes to stderr; stdout carries only `export TEST_S3_*=...` lines (also written to
# DIR/env, for `source`). Idempotent: a cluster in DIR that is running and answers signed requests is
# reused; anything else found in DIR is stopped and wiped first. Needs root and the Debian packages
# ceph-mon ceph-osd radosgw ceph-common. Stop it with test/s3/stop-rgw.sh [DIR].
#
# Settings (environment): WHARF_RGW_PORT (7480), WHARF_RGW_MON_PORT (3300),
# WHARF_RGW_ACCESS_KEY / WHARF_RGW_SECRET_KEY (fixed test-only keys by default),
# WHARF_RGW_MEMSTORE_BYTES (2 GiB: the OSD keeps every object in RAM, up to this much).
set -euo pipefail

dir="${1:-/tmp/wharf-rgw}"
port="${WHARF_RGW_PORT:-7480}"
mon_port="${WHARF_RGW_MON_PORT:-3300}"
access_key="${WHARF_RGW_ACCESS_KEY:-WHARFTESTACCESSKEY01}"
secret_key="${WHARF_RGW_SECRET_KEY:-wharf-test-secret-key-not-for-production-0001}"
memstore_bytes="${WHARF_RGW_MEMSTORE_BYTES:-2147483648}"
endpoint="http://127.0.0.1:${port}"
here="$(cd "$(dirname "$0")" && pwd)"
started=$SECONDS
# Only print_env writes to the real stdout (fd 3); whatever the ceph tools print goes to stderr.
# The daemons are started with fd 3 closed: one that kept it would hold the caller's `$(...)` open
# forever, since a command substitution ends only when every writer of its pipe has gone.
exec 3>&1 1>&2

log() { printf 'start-rgw: [%2d s] %s\n' "$((SECONDS - started))" "$*" >&2; }
fail() {
  log "error: $*"
  for f in "$dir"/log/*.log; do
    [ -e "$f" ] || continue
    log "--- last lines of $f"
    tail -n 20 "$f" >&2 || true
  done
  exit 1
}

print_env() {
  cat >"$dir/env" <<EOF
export TEST_S3_ENDPOINT=$endpoint
export TEST_S3_ACCESS_KEY=$access_key
export TEST_S3_SECRET_KEY=$secret_key
export TEST_S3_REGION=us-east-1
EOF
  cat "$dir/env" >&3
}

# A signed ListBuckets: proves radosgw serves and knows the test user.
healthy() {
  # curl 7.88 does not add the payload hash S3 requires; this one is the SHA-256 of an empty body.
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 \
    -H 'x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' \
    --aws-sigv4 'aws:amz:us-east-1:s3' --user "$access_key:$secret_key" "$endpoint/")" = 200 ]
}

for tool in ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool curl; do
  command -v "$tool" >/dev/null 2>&1 ||
    fail "$tool not found; install: apt-get install --no-install-recommends ceph-mon ceph-osd radosgw ceph-common curl"
done
[ "$(id -u)" -eq 0 ] || fail "must run as root"

if [ -f "$dir/ceph.conf" ] && healthy; then
  log "reusing the running cluster in $dir ($endpoint)"
  print_env
  exit 0
fi
if [ -f "$dir/.wharf-rgw" ]; then
  log "stale state in $dir: stopping and wiping it"
  "$here/stop-rgw.sh" "$dir" >&2
elif [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
  fail "$dir exists and was not made by this script; give an empty or new directory"
fi

mkdir -p "$dir"/{run,log,mon,osd,rgw}
# The mark stop-rgw.sh looks for before it deletes the folder.
touch "$dir/.wharf-rgw"
conf="$dir/ceph.conf"
fsid="$(cat /proc/sys/kernel/random/uuid)"
ceph=(ceph -c "$conf" --connect-timeout 20)

# Every address is loopback and every file lives in $dir: nothing listens on 0.0.0.0, nothing is
# written to /var/log/ceph or /var/run/ceph.
cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $dir/keyring
run dir = $dir/run
pid file = $dir/run/\$name.pid
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
mon cluster log file = $dir/log/cluster.log
mon data = $dir/mon/\$cluster-\$id
osd data = $dir/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = $memstore_bytes
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon warn on pool no redundancy = false
# A test cluster on a fairly full disk: warn, but do not stop the monitor (the default stops it below 5%).
mon data avail crit = 1
osd crush chooseleaf type = 0
mon max pg per osd = 1000
debug ms = 0
# radosgw creates its pools one monitor commit at a time; the default 1 s batching makes that 10 s.
paxos propose interval = 0.05
paxos min wait = 0.01

[osd.0]
# Its own keyring: --mkkey writes here, and must not overwrite the admin keyring.
keyring = $dir/osd/ceph-0/keyring

[client.rgw.a]
keyring = $dir/rgw/keyring
rgw frontends = beast endpoint=127.0.0.1:$port
rgw data = $dir/rgw
rgw thread pool size = 128
rgw enable usage log = false
# Deleted data is reclaimed after seconds, not the default 2 hours: memstore holds it all in RAM.
rgw gc obj min wait = 5
rgw gc processor period = 5
EOF

log "monitor"
ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$dir/keyring" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/keyring" >/dev/null
monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring"
ceph-mon -c "$conf" -i a 3>&- || fail "ceph-mon did not start"

log "osd"
osd_uuid="$(cat /proc/sys/kernel/random/uuid)"
osd_id="$("${ceph[@]}" osd new "$osd_uuid")" || fail "the monitor does not answer"
[ "$osd_id" = 0 ] || fail "expected osd id 0, got $osd_id"
mkdir -p "$dir/osd/ceph-0"
ceph-osd -c "$conf" -i 0 --mkfs --mkkey --osd-uuid "$osd_uuid" --no-mon-config 2>>"$dir/log/osd-mkfs.log" ||
  fail "ceph-osd --mkfs failed"
"${ceph[@]}" auth add osd.0 osd 'allow *' mon 'allow profile osd' -i "$dir/osd/ceph-0/keyring" 2>/dev/null
ceph-osd -c "$conf" -i 0 2>>"$dir/log/osd-start.log" 3>&- || fail "ceph-osd did not start"

log "radosgw"
"${ceph[@]}" auth get-or-create client.rgw.a mon 'allow rw' osd 'allow rwx' -o "$dir/rgw/keyring"
radosgw -c "$conf" -n client.rgw.a 3>&- || fail "radosgw did not start"

for _ in $(seq 1 120); do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$endpoint/")" = 200 ]; then break; fi
  sleep 0.25
done
[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$endpoint/")" = 200 ] ||
  fail "radosgw does not answer on $endpoint"

log "test user"
radosgw-admin -c "$conf" -n client.admin user create --uid=wharf-test --display-name='Wharf tests' \
  --access-key="$access_key" --secret-key="$secret_key" >/dev/null 2>>"$dir/log/radosgw-admin.log" ||
  fail "radosgw-admin user create failed"

for _ in $(seq 1 40); do
  if healthy; then break; fi
  sleep 0.25
done
healthy || fail "radosgw does not accept the test user's signed requests"
log "serving on $endpoint after $((SECONDS - started)) s"
print_env
