"""install/: the systemd unit holds what a home user's machine needs (skipped before `init`,
not restarted on a mistake only a person can fix, any node home), and the scripts parse and
do not depend on $USER."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.cli import EXIT_USER_ERROR
from orchestrator.crash import EXIT_CRASH
from tests.conftest import run_cli

INSTALL = Path(__file__).resolve().parents[2] / "install"
UNIT = INSTALL / "twinsync@.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=("#",), strict=True)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_the_unit_is_a_template_skipped_before_init_and_not_restarted_on_user_errors():
    unit = _unit()
    assert not (INSTALL / "twinsync.service").exists(), "the single-home unit is replaced by the template"
    assert unit["Unit"]["ConditionPathExists"] == "%f/twinsync.toml"
    assert unit["Service"]["ExecStart"] == "@TWINSYNC@ run --home %f"
    assert unit["Service"]["Restart"] == "on-failure"
    prevented = unit["Service"]["RestartPreventExitStatus"].split()
    assert str(EXIT_USER_ERROR) in prevented and "2" in prevented
    assert str(EXIT_CRASH) not in prevented, "a crash is restarted"


def test_twinsync_run_without_a_home_exits_with_the_code_the_unit_does_not_restart(tmp_path):
    result = run_cli("run", "--home", tmp_path / "nowhere", ok=False)
    assert result.exit_code == EXIT_USER_ERROR
    assert "No twinsync node at" in result.output


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_filled_in_unit(tmp_path):
    instance = tmp_path / "twinsync@home-me-.local-share-twinsync.service"
    instance.write_text(UNIT.read_text().replace("@TWINSYNC@", "/bin/true").replace("@ROOT@", str(tmp_path)))
    done = subprocess.run(["systemd-analyze", "verify", str(instance)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if instance.name in line]
    assert done.returncode == 0 and complaints == [], done.stdout + done.stderr


@pytest.mark.parametrize("script", ["setup.sh", "uninstall.sh"])
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", str(INSTALL / script)], check=True)


def _without_user() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("USER", "LOGNAME")}


def test_setup_help_runs_without_user():
    done = subprocess.run(["bash", str(INSTALL / "setup.sh"), "--help"], capture_output=True, text=True,
                          env=_without_user(), timeout=30)
    assert done.returncode == 0, done.stderr
    assert "--service" in done.stdout and "--home DIR" in done.stdout


def test_setup_service_without_user_or_systemd_says_so_before_installing_anything(tmp_path):
    """Under `su -c`, in a container or cron: no `USER: unbound variable`, one sentence with
    the user's name from id -un, and nothing installed."""
    (tmp_path / "install").mkdir()
    script = tmp_path / "install" / "setup.sh"
    shutil.copy(INSTALL / "setup.sh", script)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "systemctl").write_text("#!/bin/sh\nexit 1\n")
    (fake / "systemctl").chmod(0o755)
    env = {**_without_user(), "PATH": f"{fake}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(script), "--service"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1
    assert "unbound variable" not in done.stderr
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    assert done.stderr.strip() == (f"setup.sh: no systemd user session here (log in normally, or run "
                                   f"'loginctl enable-linger {user}'); nothing was installed.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "install"], "nothing was installed"
