"""Command lines per Syncthing version, checked against the flags each release declares.

FLAGS holds, per tag of github.com/syncthing/syncthing, the long options that matter to twinsync
as that release's kong structs declare them: 1.x `serveOptions` (cmd/syncthing/main.go) plus
`cmdutil.CommonOptions` (cmd/syncthing/cmdutil/options_common.go) and generate's `CLI`;
2.x the root `CLI` (--home), `serveCmd` and generate's `CLI`. A flag left out of a release
is one it rejects ("unknown flag"), which is how 2.0 broke `generate`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from syncthing.errors import SyncthingConfigError
from syncthing.process import binary_version, find_binary, managed_env
from syncthing.version import (SyncthingVersion, generate_argv, parse_version, serve_argv,
                               version_argvs)

_V1_SERVE = {"home", "no-browser", "no-restart", "no-upgrade", "logflags", "logfile",
             "log-max-size", "log-max-old-files", "no-default-folder", "skip-port-probing",
             "verbose", "version"}
_V1_GENERATE = {"home", "no-default-folder", "skip-port-probing", "gui-user", "gui-password"}
# 2.0: --logfile is an alias of --log-file, --logflags a hidden no-op, --verbose gone.
_V2_SERVE = {"home", "no-browser", "no-restart", "no-upgrade", "logflags", "log-file", "logfile",
             "log-max-size", "log-max-old-files", "no-port-probing", "log-level"}
_V2_GENERATE = {"home", "no-port-probing", "gui-user", "gui-password"}

FLAGS = {
    "1.19.2": (_V1_SERVE, _V1_GENERATE),
    "1.27.0": (_V1_SERVE, _V1_GENERATE),
    "1.29.5": (_V1_SERVE, _V1_GENERATE),
    "1.30.0": (_V1_SERVE, _V1_GENERATE),
    "2.0.0": (_V2_SERVE, _V2_GENERATE),
    "2.1.3": (_V2_SERVE, _V2_GENERATE),
}

#: `syncthing --version` as these releases print it (lib/build/build.go LongVersionFor); the
#: first two are the Debian packages CI runs.
LINES = {
    "1.19.2": 'syncthing v1.19.2-ds1 "Fermium Flea" (go1.19.8 linux-amd64) debian@debian 2023-04-09 10:47:16 UTC',
    "1.29.5": 'syncthing v1.29.5 "Gold Grasshopper" (go1.24.2 linux-amd64) debian@debian 2025-04-20 21:21:27 UTC',
    "2.1.3": 'syncthing v2.1.3 "Hafnium Hornet" (go1.25.4 linux-amd64) builder@github.syncthing.net '
             '2025-11-04 12:00:00 UTC [noupgrade]',
}


def _long_options(argv: list[str]) -> set[str]:
    return {arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")}


def _version(tag: str) -> SyncthingVersion:
    return parse_version(f'syncthing v{tag} "X" (go1 linux-amd64) u@h 2025-01-01 00:00:00 UTC')


@pytest.mark.parametrize("tag", sorted(FLAGS))
def test_generate_uses_only_flags_the_release_declares(tag):
    argv = generate_argv("syncthing", Path("/h"), _version(tag))
    assert argv[:2] == ["syncthing", "generate"]
    assert _long_options(argv) <= FLAGS[tag][1]
    # never a single-dash long option (2.x has no legacy conversion)
    assert not [a for a in argv[2:] if a.startswith("-") and not a.startswith("--")]


@pytest.mark.parametrize("tag", sorted(FLAGS))
def test_serve_uses_only_flags_the_release_declares(tag):
    argv = serve_argv("syncthing", Path("/h"), _version(tag), log_file=Path("/h/syncthing.log"))
    assert argv[:2] == ["syncthing", "serve"]
    assert _long_options(argv) <= FLAGS[tag][0]


@pytest.mark.parametrize("tag", sorted(FLAGS))
def test_serve_writes_a_rotated_log_file(tag):
    """Only a log written by Syncthing's monitor through --logfile/--log-file is rotated."""
    argv = serve_argv("st", Path("/h"), _version(tag), log_file=Path("/h/s.log"),
                      log_max_bytes=1000, log_max_old_files=2)
    options = {a[2:].split("=", 1)[0]: a.split("=", 1)[-1] for a in argv if a.startswith("--")}
    log_flag = "log-file" if tag.startswith("2.") else "logfile"
    assert options[log_flag] == "/h/s.log"
    assert (options["log-max-size"], options["log-max-old-files"]) == ("1000", "2")


def test_2x_generate_drops_the_flags_it_removed():
    argv = generate_argv("syncthing", Path("/h"), _version("2.0.0"))
    assert "--no-default-folder" not in argv and "--skip-port-probing" not in argv
    assert argv == ["syncthing", "generate", "--home=/h", "--no-port-probing"]
    assert generate_argv("syncthing", Path("/h"), _version("1.29.5")) == [
        "syncthing", "generate", "--home=/h", "--no-default-folder", "--skip-port-probing"]


def test_version_is_asked_the_1x_way_then_the_2_0_0_way():
    # 1.x: only --version; 2.0.0-2.0.2: only the `version` subcommand.
    assert version_argvs("st") == [["st", "--version"], ["st", "version"]]


@pytest.mark.parametrize(("tag", "line"), sorted(LINES.items()))
def test_parse_version_reads_real_version_lines(tag, line):
    assert str(parse_version(line)) == tag


def test_versions_compare_by_number_and_know_which_are_tested():
    v1192, v1295, v2 = (parse_version(LINES[t]) for t in ("1.19.2", "1.29.5", "2.1.3"))
    assert v1192 < v1295 < v2 and _version("1.9.0") < _version("1.19.0")
    assert v1192.suffix == "-ds1" and v1192.tested and v1295.tested
    assert not v2.tested


@pytest.mark.parametrize("line", ["", "Usage: syncthing", "git version 2.39.5", "syncthing 1.2"])
def test_parse_version_refuses_what_is_not_syncthing(line):
    with pytest.raises(SyncthingConfigError, match="TWINSYNC_SYNCTHING"):
        parse_version(line)


def test_managed_env_drops_the_users_syncthing_settings():
    """An STHOMEDIR or STGUIADDRESS meant for the user's own Syncthing must not reach ours;
    1.27+ and 2.x read them (cmd/syncthing env tags) and refuse --home next to STCONFDIR."""
    env = managed_env({"PATH": "/bin", "HOME": "/home/u", "STHOMEDIR": "/x", "STCONFDIR": "/c",
                       "STGUIADDRESS": "0.0.0.0:1", "STMONITORED": "yes", "STRESTART": "1"})
    assert env == {"PATH": "/bin", "HOME": "/home/u", "STNODEFAULTFOLDER": "1", "STNOUPGRADE": "1",
                   "STNORESTART": "1"}


def test_twinsync_syncthing_picks_the_program_and_a_wrong_one_is_named(tmp_path, monkeypatch):
    program = tmp_path / "syncthing-1.29"
    program.write_text("#!/bin/sh\necho 'syncthing v1.29.5 \"Gold Grasshopper\" (go1.24.2 linux-amd64) x@y 2025'\n")
    program.chmod(0o755)
    monkeypatch.setenv("TWINSYNC_SYNCTHING", str(program))
    assert find_binary() == str(program)
    assert str(binary_version()) == "1.29.5"
    monkeypatch.setenv("TWINSYNC_SYNCTHING", str(tmp_path / "missing"))
    with pytest.raises(SyncthingConfigError, match="TWINSYNC_SYNCTHING names .*missing"):
        find_binary()


def test_a_program_that_will_not_say_its_version_is_refused(tmp_path):
    program = tmp_path / "not-syncthing"
    program.write_text("#!/bin/sh\necho nope >&2\nexit 3\n")
    program.chmod(0o755)
    with pytest.raises(SyncthingConfigError, match="did not say which version"):
        binary_version(str(program))
