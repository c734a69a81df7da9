#!/usr/bin/env bash
# Install the Debian packages of the real clients the tests drive (or, given bench/apt-packages.txt, the peers the
# benchmarks measure), whichever are missing. The list has "package: command" lines; a package is installed when its
# command is not on PATH (a command written perl:Module is a Perl module that must load; file:GLOB, a file that must
# exist).
# Daemons in those packages (nginx, nsd) must not start on install: the tests start their own, on loopback.
set -euo pipefail
list="${1:-$(dirname "$0")/apt-packages.txt}"
missing=$(grep -v '^#' "$list" | while IFS=: read -r pkg cmd; do
  cmd=${cmd// /}
  if [ -z "$pkg" ]; then continue; fi
  case "$cmd" in
    perl:*) perl -M"${cmd#perl:}" -e 1 >/dev/null 2>&1 || echo "$pkg" ;;
    file:*) ls ${cmd#file:} >/dev/null 2>&1 || echo "$pkg" ;;
    *) if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ]; then echo "$pkg"; fi ;;
  esac
done | sort -u)
[ -z "$missing" ] && exit 0
echo "installing: $(echo $missing)"
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
made_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  made_policy=1
fi
trap '[ -n "$made_policy" ] && $sudo rm -f /usr/sbin/policy-rc.d' EXIT
$sudo apt-get update -qq
# Postfix (smtp-source, smtp-sink for the mail bench) asks what kind of mail system this is: none.
echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections 2>/dev/null || true
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
