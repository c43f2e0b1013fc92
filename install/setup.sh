#!/usr/bin/env bash
# Set up twinsync on this machine: Syncthing and Git from the system's packages (Debian/Ubuntu),
# a virtualenv in .venv with twinsync in it. Safe to run again: it only adds what is missing.
#
#   install/setup.sh            for use
#   install/setup.sh --dev      also the test tools (pytest, hypothesis, ...)
#   install/setup.sh --service  also run the daemon (and Syncthing, if none runs) as
#                               systemd user services; undo with install/uninstall.sh
#   --home DIR                  with --service: the node home the daemon runs for
#                               (default: $TWINSYNC_HOME, else twinsync's per-user data dir)
set -euo pipefail

usage() { sed -n '2,11s/^# \{0,1\}//p' "$0"; }
DEV=0
SERVICE=0
NODE_HOME=${TWINSYNC_HOME:-}
while (($#)); do
  case "$1" in
    --dev) DEV=1 ;;
    --service) SERVICE=1 ;;
    --home) [ $# -ge 2 ] || { echo "setup.sh: --home needs a directory; see --help." >&2; exit 2; }
            NODE_HOME=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup.sh: unknown option '$1'; see --help." >&2; exit 2 ;;
  esac
  shift
done

cd "$(dirname "$0")/.."
ROOT=$(pwd)

# Checked before anything is installed: a service that cannot be set up is said at once.
# $USER is not set under `su -c`, in containers or in cron; id -un always answers.
if [ "$SERVICE" = 1 ] && { ! command -v systemctl >/dev/null || ! systemctl --user show-environment >/dev/null 2>&1; }; then
  echo "setup.sh: no systemd user session here (log in normally, or run 'loginctl enable-linger $(id -un)'); nothing was installed." >&2
  exit 1
fi

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
  [ -n "$NODE_HOME" ] || NODE_HOME=$(.venv/bin/python -c 'import platformdirs; print(platformdirs.user_data_path("twinsync"))')
  NODE_HOME=$(realpath -m "$NODE_HOME")
  INSTANCE="twinsync@$(systemd-escape --path "$NODE_HOME").service"
  UNIT_DIR="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
  mkdir -p "$UNIT_DIR"
  sed -e "s#@TWINSYNC@#$ROOT/.venv/bin/twinsync#g" -e "s#@ROOT@#$ROOT#g" "install/twinsync@.service" > "$UNIT_DIR/twinsync@.service"
  # The single unit of older versions ran only the default home; the template replaces it.
  if [ -f "$UNIT_DIR/twinsync.service" ]; then
    systemctl --user disable --now twinsync.service 2>/dev/null || true
    rm -f "$UNIT_DIR/twinsync.service"
  fi
  systemctl --user daemon-reload
  if ! pgrep -u "$(id -u)" -x syncthing >/dev/null && systemctl --user cat syncthing.service >/dev/null 2>&1; then
    systemctl --user enable --now syncthing.service
    echo "Syncthing now runs as a user service (syncthing.service)."
  fi
  systemctl --user enable --now "$INSTANCE"
  if [ -f "$NODE_HOME/twinsync.toml" ]; then
    echo "The twinsync daemon for $NODE_HOME runs as a user service: systemctl --user status '$INSTANCE'"
  else
    echo "The twinsync daemon for $NODE_HOME is enabled as '$INSTANCE'; it waits for the node home:"
    echo "  twinsync init --home $NODE_HOME --name NAME, then: systemctl --user start '$INSTANCE'"
  fi
fi

echo
echo "twinsync is installed: $(.venv/bin/twinsync --version 2>/dev/null || echo "$ROOT/.venv/bin/twinsync")"
echo "Put it on your PATH:  export PATH=\"$ROOT/.venv/bin:\$PATH\""
echo "Next:  twinsync init --name \$(hostname -s)             (uses the Syncthing you run)"
echo "   or  twinsync init --name \$(hostname -s) --managed   (twinsync runs a private Syncthing)"
[ "$DEV" = 1 ] && echo "Tests: .venv/bin/pytest -q"
exit 0
