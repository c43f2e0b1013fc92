#!/usr/bin/env bash
# Remove twinsync's systemd user service. Node homes, keys, frames and traces stay where
# they are (by default ~/.local/share/twinsync); delete them yourself if you mean to.
set -euo pipefail
UNIT="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user/twinsync.service"
if command -v systemctl >/dev/null && systemctl --user show-environment >/dev/null 2>&1; then
  systemctl --user disable --now twinsync.service 2>/dev/null || true
fi
rm -f "$UNIT"
command -v systemctl >/dev/null && systemctl --user daemon-reload 2>/dev/null || true
echo "twinsync's service is removed; your data is untouched (see 'twinsync status' for where it is)."
