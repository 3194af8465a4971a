#!/usr/bin/env bash
# One entry point for people and CI:
#   ./run.sh demo    install what is missing, start the lab and the exporter until Ctrl-C
#   ./run.sh test    install what is missing, then lint, type-check and run every test against the lab
#   ./run.sh lint    ruff format --check, ruff check, codespell and mypy only
#   ./run.sh bench   the benchmarks in bench/ (not part of the tests)
# Needs root (or sudo): it installs Debian packages and runs Samba domain controllers on 127.0.0.2/127.0.0.6.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(
  samba samba-ad-dc samba-ad-provision winbind krb5-user ldb-tools smbclient ldap-utils  # the lab DCs and clients
  prometheus prometheus-alertmanager                                    # promtool, Prometheus and amtool in tests
  mtail mawk prometheus-blackbox-exporter prometheus-node-exporter wrk   # peers and load in the benchmarks
  libkrb5-dev gcc python3-dev python3-venv                              # to build gssapi (Kerberos binds)
  chromium                                                              # landing-page checks in a real browser
  dovecot-imapd                                                         # the lab's canary mailbox (IMAP)
  systemd                                                               # systemd-analyze verify of the example unit
  faketime                                                              # a skewed clock for the Kerberos tests
  curl util-linux procps
)
VENV=.venv

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

install_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "Installing Debian packages: ${missing[*]}" >&2
  # Keep the packages' own services (smbd, nmbd, prometheus...) from starting: the lab runs its own.
  local had_policy=0
  [ -e /usr/sbin/policy-rc.d ] && had_policy=1
  [ $had_policy -eq 1 ] || { printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null; as_root chmod +x /usr/sbin/policy-rc.d; }
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ $had_policy -eq 1 ] || as_root rm -f /usr/sbin/policy-rc.d
}

python_env() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[dev,kerberos,lab]"
}

setup() { install_packages; python_env; }

lint() {
  "$VENV/bin/ruff" format --check .
  "$VENV/bin/ruff" check .
  "$VENV/bin/codespell" --toml pyproject.toml .
  "$VENV/bin/mypy" exporter lab dashboards bench tests tools
}

cmd=${1:-help}
shift || true
case "$cmd" in
  demo)  setup; as_root "$VENV/bin/python" -m lab demo "$@" ;;
  test)  setup; lint; as_root "$VENV/bin/python" -m pytest -q "$@" ;;
  lint)  python_env; lint ;;
  bench) setup; as_root "$VENV/bin/python" -m bench "$@" ;;
  *) sed -n '2,7p' "$0"; exit 2 ;;
esac
