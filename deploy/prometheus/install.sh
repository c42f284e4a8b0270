#!/usr/bin/env bash
# Installs Prometheus and promtool from Debian's `prometheus` package when they are missing, for
# the rules tests and the live dashboard check. Idempotent and silent when already installed.
#
# The package ships a service (systemd unit + /etc/init.d/prometheus) that would listen on :9090.
# wxsub runs its own Prometheus per test on a free loopback port, so the system service must not
# run: during the install a policy-rc.d forbids starting services (unless the machine already has
# one), and afterwards any service the package did start is stopped and disabled.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "wxsub prometheus: prometheus/promtool missing; run as root or: apt-get install prometheus" >&2
  exit 2
fi

echo "==> installing prometheus (Debian package)"
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  own_policy=1
fi
cleanup() { if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
cleanup() {
  rm -f "$log"
  if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi
}
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "wxsub prometheus: apt-get install prometheus failed" >&2
  exit 1
fi

# Belt and braces: if a service did start (a real init with no policy), stop and disable it.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now prometheus.service >/dev/null 2>&1 || true
elif [ -x /etc/init.d/prometheus ]; then
  /etc/init.d/prometheus stop >/dev/null 2>&1 || true
  if command -v update-rc.d >/dev/null 2>&1; then
    update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
fi

command -v prometheus >/dev/null && command -v promtool >/dev/null
echo "==> $(prometheus --version 2>&1 | head -n1)"
