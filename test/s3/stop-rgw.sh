#!/usr/bin/env bash
# Stops what test/s3/start-rgw.sh started in DIR (default /tmp/wharf-rgw) and removes DIR. Only the
# processes named in DIR's pid files are signalled. Safe to run when nothing is running.
set -uo pipefail

dir="${1:-/tmp/wharf-rgw}"

stop_pid_file() {
  local file="$1" pid
  [ -f "$file" ] || return 0
  pid="$(cat "$file" 2>/dev/null)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
}

# radosgw first, the monitor last: the others talk to it while shutting down.
for name in client.rgw.a osd.0 mon.a; do
  stop_pid_file "$dir/run/$name.pid"
done

# Delete only a folder start-rgw.sh made (it leaves a mark in it).
if [ -f "$dir/.wharf-rgw" ]; then
  rm -rf "$dir"
elif [ -e "$dir" ]; then
  echo "stop-rgw: $dir was not made by start-rgw.sh; left in place" >&2
fi
echo "stop-rgw: stopped (${dir})"
