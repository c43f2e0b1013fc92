#!/usr/bin/env bash
# Remove twinsync's systemd user service (every node home's instance of twinsync@.service,
# and the single twinsync.service of older versions). Node homes, keys, frames and traces stay
# where they are (by default ~/.local/share/twinsync); delete them yourself if you mean to.
set -euo pipefail
UNIT_DIR="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
if command -v systemctl >/dev/null && systemctl --user show-environment >/dev/null 2>&1; then
  systemctl --user stop 'twinsync@*.service' twinsync.service 2>/dev/null || true
  # Disabling the template removes the enablement of all its instances.
  systemctl --user disable twinsync@.service twinsync.service 2>/dev/null || true
fi
rm -f "$UNIT_DIR/twinsync@.service" "$UNIT_DIR/twinsync.service" "$UNIT_DIR"/*.wants/twinsync@*.service
command -v systemctl >/dev/null && systemctl --user daemon-reload 2>/dev/null || true
echo "twinsync's service is removed; your data is untouched (see 'twinsync status' for where it is)."
