"""Which Syncthing this is, and the command lines that differ between its versions.

Pure functions only, so each version's rules can be checked without that version installed.
Every rule cites the Syncthing source it was read from (github.com/syncthing/syncthing):

- `generate` (cmd/syncthing/generate/generate.go): 1.x takes `--no-default-folder` and
  `--skip-port-probing` (cmdutil.CommonOptions); 2.0 removed both (it makes no default folder)
  and has `--no-port-probing` instead. `--home` works after the subcommand in both (a flag of
  the subcommand in 1.x, a root flag that kong accepts anywhere in 2.x).
- `serve` (cmd/syncthing/main.go): 1.x has `--logfile` and `--logflags`; 2.0 renamed the
  first to `--log-file` (keeping `logfile` as an alias) and made `--logflags` a hidden no-op.
  `--log-max-size`/`--log-max-old-files` exist in every version from 1.19.2 to 2.1 (default
  10 MiB and 3), but only the monitor process (cmd/syncthing/monitor.go) rotates, and only a
  log written through `--logfile`/`--log-file`, never one it was handed on stdout.
- Asking the version (cmd/syncthing/main.go): 1.x has only `--version`; 2.0.0-2.0.2 have only
  the `version` subcommand (the flag came back in 2.0.3); later 2.x have both.
- The version line (lib/build/build.go `LongVersionFor`, "part of our external API"):
  `syncthing v1.29.5 "Gold Grasshopper" (go1.24.2 linux-amd64) debian@debian 2025-04-20 ...`;
  the REST API's `/rest/system/version` `longVersion` is the same string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from syncthing.errors import SyncthingConfigError

#: Versions the whole suite runs against in CI (.ci/run): Debian bookworm's and trixie's.
TESTED_VERSIONS = ("1.19.2", "1.29.5")

#: The managed Syncthing's log: rotated by Syncthing's monitor at this size, this many old
#: files kept (syncthing.0.log, syncthing.1.log), so it never exceeds 3 × 2 MiB.
LOG_MAX_BYTES = 2 << 20
LOG_MAX_OLD_FILES = 2

_VERSION_LINE = re.compile(r"^syncthing v(\d+)\.(\d+)\.(\d+)(\S*)")


@dataclass(frozen=True, order=True)
class SyncthingVersion:
    """A Syncthing release number; `suffix` keeps what follows it (`-ds1`, `-rc.1`, ...)."""

    major: int
    minor: int
    patch: int
    suffix: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def tested(self) -> bool:
        """True for a release whose whole test suite runs in CI (packagers' suffixes aside)."""
        return str(self) in TESTED_VERSIONS


def parse_version(line: str) -> SyncthingVersion:
    """The version from `syncthing --version` or the API's `longVersion`."""
    match = _VERSION_LINE.match(line.strip())
    if not match:
        raise SyncthingConfigError(
            f"Cannot tell which Syncthing this is from its version line {line.strip()[:80]!r}; "
            "check that the program is Syncthing (or set TWINSYNC_SYNCTHING to the right one).")
    major, minor, patch, suffix = match.groups()
    return SyncthingVersion(int(major), int(minor), int(patch), suffix)


def version_argvs(binary: str) -> list[list[str]]:
    """Ways to ask a Syncthing its version, to try in order until one succeeds."""
    return [[binary, "--version"], [binary, "version"]]


def generate_argv(binary: str, home: Path, version: SyncthingVersion) -> list[str]:
    """`syncthing generate` for a fresh home: no default folder, no port probing (the config is
    rewritten with free loopback ports before the first start anyway)."""
    argv = [binary, "generate", f"--home={home}"]
    if version.major >= 2:
        return argv + ["--no-port-probing"]
    return argv + ["--no-default-folder", "--skip-port-probing"]


def serve_argv(binary: str, home: Path, version: SyncthingVersion, *, log_file: Path,
               log_max_bytes: int = LOG_MAX_BYTES,
               log_max_old_files: int = LOG_MAX_OLD_FILES) -> list[str]:
    """`syncthing serve` for a managed home, writing a rotated log file itself."""
    argv = [binary, "serve", f"--home={home}", "--no-browser", "--no-restart", "--no-upgrade"]
    if version.major >= 2:
        # 2.x logs with timestamps by default; --logflags is a hidden no-op there.
        argv.append(f"--log-file={log_file}")
    else:
        argv += ["--logflags=3", f"--logfile={log_file}"]  # 3: date and time
    return argv + [f"--log-max-size={log_max_bytes}", f"--log-max-old-files={log_max_old_files}"]
