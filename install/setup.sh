#!/usr/bin/env bash
# Set up twinsync on this machine: Syncthing and Git from the system's packages (Debian/Ubuntu),
# a virtualenv in .venv with twinsync in it. Safe to run again: it only adds what is missing.
#
#   install/setup.sh            for use
#   install/setup.sh --dev      also the test tools (pytest, hypothesis, ...)
#   install/setup.sh --service  also run the daemon (and Syncthing, if none runs) as
#                               systemd user services; undo with install/uninstall.sh
set -euo pipefail

usage() { sed -n '2,9s/^# \{0,1\}//p' "$0"; }
DEV=0
SERVICE=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    --service) SERVICE=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg'; see --help." >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
ROOT=$(pwd)

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup.sh: twinsync needs Python 3.11 or newer as '$PYTHON'; install it or set PYTHON=/path/to/python3.11." >&2
  exit 1
fi

missing=()
command -v syncthing >/dev/null || missing+=(syncthing)
command -v git >/dev/null || missing+=(git)
"$PYTHON" -m venv --help >/dev/null 2>&1 && "$PYTHON" -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
# The tests start a real MQTT broker on 127.0.0.1 for the event bus.
if [ "$DEV" = 1 ] && ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
  missing+=(mosquitto)
fi
if ((${#missing[@]})); then
  if ! command -v apt-get >/dev/null; then
    echo "setup.sh: please install ${missing[*]} with your system's package manager, then run this again." >&2
    exit 1
  fi
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "Installing ${missing[*]} with apt-get ..."
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
EXTRA=""
[ "$DEV" = 1 ] && EXTRA="[test]"
echo "Installing twinsync${EXTRA} into $ROOT/.venv ..."
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${EXTRA}"

if [ "$SERVICE" = 1 ]; then
  if ! command -v systemctl >/dev/null || ! systemctl --user show-environment >/dev/null 2>&1; then
    echo "setup.sh: no systemd user session here (log in normally, or run 'loginctl enable-linger $USER'); twinsync is installed but not as a service." >&2
    exit 1
  fi
  UNIT_DIR="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
  mkdir -p "$UNIT_DIR"
  sed -e "s#@TWINSYNC@#$ROOT/.venv/bin/twinsync#g" -e "s#@ROOT@#$ROOT#g" install/twinsync.service > "$UNIT_DIR/twinsync.service"
  systemctl --user daemon-reload
  if ! pgrep -u "$(id -u)" -x syncthing >/dev/null && systemctl --user cat syncthing.service >/dev/null 2>&1; then
    systemctl --user enable --now syncthing.service
    echo "Syncthing now runs as a user service (syncthing.service)."
  fi
  systemctl --user enable --now twinsync.service
  echo "The twinsync daemon runs as a user service: systemctl --user status twinsync"
  echo "(it needs a node home first: twinsync init --name NAME)"
fi

echo
echo "twinsync is installed: $(.venv/bin/twinsync --version 2>/dev/null || echo "$ROOT/.venv/bin/twinsync")"
echo "Put it on your PATH:  export PATH=\"$ROOT/.venv/bin:\$PATH\""
echo "Next:  twinsync init --name \$(hostname -s)             (uses the Syncthing you run)"
echo "   or  twinsync init --name \$(hostname -s) --managed   (twinsync runs a private Syncthing)"
[ "$DEV" = 1 ] && echo "Tests: .venv/bin/pytest -q"
exit 0
