#!/usr/bin/env bash
# A real etcd for the backup tests (tests/test_backup_etcd.py), without installing or starting a service:
# Debian trixie's etcd-server (etcd, etcdutl) and etcd-client (etcdctl), 3.5.x, downloaded with a private
# apt configuration and unpacked under build/ci/etcd. Bookworm only has 3.4 (no etcdutl); the cluster's
# own etcd (3.6 or 3.7, from kubeadm's image) has the same `snapshot save` and `etcdutl snapshot
# status|restore` the scripts use (REFERENCE.md section "Backups"). Bookworm's debian-archive-keyring
# already holds trixie's keys, so the trixie index verifies with no extra key.
# Prints the directory holding etcd, etcdctl and etcdutl (and, on stderr, the CI log, `etcdutl version`
# or why it failed). Idempotent: a second run reuses the unpacked tree.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="$PWD/build/ci/etcd-apt"
ROOT="$PWD/build/ci/etcd"
if [[ -x "$ROOT/usr/bin/etcd" && -x "$ROOT/usr/bin/etcdutl" && -x "$ROOT/usr/bin/etcdctl" ]]; then
  "$ROOT/usr/bin/etcdutl" version >&2
  echo "$ROOT/usr/bin"
  exit 0
fi
mkdir -p "$CACHE/lists/partial" "$CACHE/cache/archives/partial" "$CACHE/debs"
echo 'deb http://deb.debian.org/debian trixie main' >"$CACHE/sources.list"
options=(-o "Dir::Etc::sourcelist=$CACHE/sources.list" -o Dir::Etc::sourceparts=/dev/null
  -o "Dir::State::Lists=$CACHE/lists" -o "Dir::Cache=$CACHE/cache" -o Dir::State::status=/var/lib/dpkg/status)
apt-get "${options[@]}" -qq update >&2
# No version pin: a trixie point release replaces the 3.5 package; any 3.5.10+ has --bump-revision.
(cd "$CACHE/debs" && rm -f ./*.deb && apt-get "${options[@]}" -qq download etcd-server/trixie etcd-client/trixie >&2) ||
  { echo "could not download etcd-server and etcd-client from Debian trixie (see apt-get's message above)" >&2; exit 1; }
rm -rf "$ROOT"
for deb in "$CACHE"/debs/*.deb; do
  dpkg-deb -x "$deb" "$ROOT"
done
"$ROOT/usr/bin/etcdutl" version >&2
echo "$ROOT/usr/bin"
