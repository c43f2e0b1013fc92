"""`twinsync doctor`: each thing a node needs, checked, with the fix when it is wrong."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from folders.errors import TwinsyncError
from folders.keys import is_private_file_safe
from orchestrator.broker import NOT_CONFIGURED, REACHABLE, broker_health
from orchestrator.heartbeat import DEGRADED, NOT_RUNNING, RUNNING, read_health
from orchestrator.localchanges import local_changes_now, owner_of
from orchestrator.node import LOOPBACK, IdentityError, Node, local_syncthing
from syncthing.errors import SyncthingAuthError, SyncthingBusyError, SyncthingError, SyncthingHungError
from syncthing.folderspec import FRAMES_FOLDER_ID, MODULES_FOLDER_ID, recovery_folder_id
from syncthing.process import binary_version
from syncthing.version import TESTED_VERSIONS, parse_version

OK, WARN, FAIL = "ok", "warn", "fail"
INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_watches")


@dataclass(frozen=True)
class Check:
    name: str
    level: str
    message: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _program_version(program: str) -> str | None:
    path = shutil.which(program)
    if not path:
        return None
    done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20)
    return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else None


def check_programs(managed: bool) -> list[Check]:
    checks = []
    st = _program_version("syncthing")
    if st:
        checks.append(Check("syncthing binary", OK, st))
    else:
        checks.append(Check("syncthing binary", FAIL if managed else WARN, "`syncthing` is not on PATH",
                            "run install/setup.sh or `sudo apt-get install syncthing`"))
    gv = _program_version("git")
    checks.append(Check("git", OK, gv) if gv else
                  Check("git", FAIL, "`git` is not on PATH", "`sudo apt-get install git`"))
    return checks


def check_key_files(node: Node) -> list[Check]:
    checks = []
    for label, path in (("signing key", node.layout.private_key), ("Syncthing API key", node.layout.api_key)):
        if not path.exists():
            checks.append(Check(label, FAIL, f"{path} is missing", "restore it from a backup"))
        elif is_private_file_safe(path):
            checks.append(Check(label, OK, f"{path} has mode 0600"))
        else:
            checks.append(Check(label, FAIL, f"{path} is readable by other users", f"chmod 600 {path}"))
    return checks


def check_inotify(node: Node, limit_file: Path = INOTIFY_LIMIT) -> Check:
    """inotify needs one watch per directory; Syncthing's watcher and ours both use them."""
    try:
        limit = int(limit_file.read_text())
    except (OSError, ValueError):
        return Check("inotify watches", WARN, "cannot read the inotify watch limit")
    dirs = sum(len(d) for root in (node.layout.frames_shared, node.layout.recovery_root)
               for _, d, _ in os.walk(root)) + 2
    needed = dirs * 2
    if needed > limit:
        return Check("inotify watches", FAIL, f"{dirs} directories need ~{needed} watches, limit is {limit}",
                     f"sudo sysctl fs.inotify.max_user_watches={max(needed * 4, 524288)}")
    level = WARN if needed > limit // 2 else OK
    return Check("inotify watches", level, f"{dirs} directories, limit {limit}",
                 "raise fs.inotify.max_user_watches" if level == WARN else "")


def check_syncthing(node: Node) -> list[Check]:
    client = node.client
    try:
        version = client.version()["version"]
        my_id = client.my_device_id()
    except SyncthingAuthError:
        return [Check("Syncthing API", FAIL, "Syncthing refused the API key",
                      f"write the key from Syncthing's GUI into {node.layout.api_key}")]
    except (SyncthingHungError, SyncthingBusyError) as exc:  # it runs: starting it is no fix
        return [Check("Syncthing API", FAIL, str(exc).split(";")[0],
                      "wait for Syncthing to finish what it is doing, or restart it")]
    except SyncthingError as exc:
        fix = (f"twinsync syncthing start --home {node.layout.home}" if node.config.managed
               else "start Syncthing")
        return [Check("Syncthing API", FAIL, str(exc).split(";")[0], fix)]
    checks = [Check("Syncthing API", OK, f"{node.config.syncthing_url} answers, key accepted ({version})")]
    if my_id != node.config.device_id:
        checks.append(Check("Syncthing device", FAIL,
                            f"Syncthing's device ID {my_id[:7]} is not this node's {node.config.device_id[:7]}",
                            "point syncthing.url in twinsync.toml at this node's Syncthing"))
    try:
        peers = node.peers()
    except TwinsyncError as exc:
        return checks + [Check("trusted peers", FAIL, str(exc).split(";")[0], f"fix {node.layout.trusted} by hand")]
    wanted = [(FRAMES_FOLDER_ID, node.layout.frames_shared, "sendreceive", peers),
              (MODULES_FOLDER_ID, node.layout.modules_shared, "sendreceive", peers),
              (recovery_folder_id(node.name), node.layout.recovery(node.name), "sendonly", peers)]
    wanted += [(recovery_folder_id(name), node.layout.recovery(name), "receiveonly", {name: p})
               for name, p in peers.items()]
    for folder_id, path, folder_type, sharers in wanted:
        checks.append(_check_folder(node, folder_id, path, folder_type, sharers))
    return checks + [check_local_changes(node)]


def check_local_changes(node: Node) -> Check:
    """A peer's recovery folder changed on this machine differs from what the peer signed;
    Syncthing 1.27.3+ keeps such changes without a conflict copy, the daemon reverts them."""
    name = "peers' recovery folders"
    try:
        found = local_changes_now(node)
    except SyncthingError as exc:
        return Check(name, WARN, f"cannot ask Syncthing about local changes: {str(exc).split(';')[0]}")
    last = f" (last revert {found.last_revert[0]}: {found.last_revert[1]})" if found.last_revert else ""
    if found.changed:
        where = ", ".join(f"{count} in {folder_id} ({owner_of(folder_id)}'s)"
                          for folder_id, count in sorted(found.changed.items()))
        return Check(name, WARN, f"items changed on this machine: {where}{last}",
                     "the running daemon reverts them (twinsync run), or use Revert Local Changes "
                     "on that folder in Syncthing's GUI")
    return Check(name, OK, f"no local changes{last}")


def check_syncthing_setup(node: Node, *, api_ok: bool = True) -> list[Check]:
    """Which Syncthing this is (and whether CI tests that version), which config.xml twinsync
    reads for it, and whether its GUI speaks HTTPS with a certificate twinsync can pin.
    `api_ok=False`: the API already failed, so it is not asked (and waited for) again."""
    local = local_syncthing(node.layout, node.config)
    try:
        if node.config.managed:
            version = binary_version()
        else:
            version = parse_version(node.client.version()["longVersion"]) if api_ok else None
    except SyncthingError:
        version = None  # the API's or the program's own failure is reported by its check
    checks = []
    if version is not None:
        if version.tested:
            checks.append(Check("Syncthing version", OK, f"{version}, a version twinsync's tests run against"))
        else:
            checks.append(Check("Syncthing version", WARN,
                                f"{version}; twinsync's tests run against {', '.join(TESTED_VERSIONS)} only",
                                "see README, Syncthing versions"))
    if local is None:
        checks.append(Check("Syncthing config", WARN,
                            f"no config.xml on this machine describes {node.config.syncthing_url}",
                            "a regenerated API key or an HTTPS certificate must then be copied by hand"))
    else:
        checks.append(Check("Syncthing config", OK, f"{local.config_path}"))
    url = node.config.syncthing_url
    if local is not None and local.url.startswith("https://"):
        if local.https_cert is None:
            checks.append(Check("Syncthing HTTPS", WARN, f"the GUI uses HTTPS but {local.config_path.parent} "
                                "has no https-cert.pem yet", "restart Syncthing so it writes one"))
        else:
            checks.append(Check("Syncthing HTTPS", OK, f"HTTPS, certificate pinned to {local.https_cert}"))
    elif url.startswith("https://"):
        checks.append(Check("Syncthing HTTPS", WARN, "HTTPS, but no Syncthing certificate here to check it against",
                            "run twinsync on the machine its Syncthing runs on"))
    elif _is_loopback(url):
        checks.append(Check("Syncthing HTTPS", OK, "plain HTTP on loopback (nothing leaves this machine)"))
    else:
        checks.append(Check("Syncthing HTTPS", WARN, f"plain HTTP to {url}: the API key crosses the network "
                            "unencrypted", "turn on HTTPS in Syncthing's GUI settings"))
    return checks


def _is_loopback(url: str) -> bool:
    return urlsplit(url).hostname in LOOPBACK


def _check_folder(node: Node, folder_id: str, path: Path, folder_type: str, sharers: dict) -> Check:
    name = f"folder {folder_id}"
    folder = node.client.folder(folder_id)
    repair = "pair again with the peer's invite code" if sharers else "run init again on a new --home"
    if folder is None:
        return Check(name, FAIL, "missing in Syncthing", repair)
    problems = []
    if Path(folder["path"]).expanduser() != path:
        problems.append(f"path is {folder['path']}, expected {path}")
    if folder["type"] != folder_type:
        problems.append(f"type is {folder['type']}, expected {folder_type}")
    shared = {d["deviceID"] for d in folder["devices"]}
    missing = sorted(n for n, p in sharers.items() if p.device_id not in shared)
    if missing:
        problems.append("not shared with " + ", ".join(missing))
    if folder.get("paused"):
        problems.append("paused")
    if problems:
        return Check(name, FAIL, "; ".join(problems), repair)
    return Check(name, OK, f"{folder_type}, shared with {len(sharers)} peer(s)")


def service_unit(home: Path) -> str:
    """The systemd instance of install/twinsync@.service that runs the daemon for `home`."""
    escape = shutil.which("systemd-escape")
    if escape is None:
        return "twinsync@.service"
    done = subprocess.run([escape, "--path", "--template=twinsync@.service", str(home)],
                          capture_output=True, text=True, timeout=20)
    return done.stdout.strip() or "twinsync@.service"


def check_service(home: Path) -> Check:
    """Whether the daemon for `home` runs as a systemd user service (install/setup.sh --service)."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return Check("service", WARN, "no systemctl here; run `twinsync run` yourself")
    unit = service_unit(home)
    done = subprocess.run([systemctl, "--user", "is-active", unit],
                          capture_output=True, text=True, timeout=20)
    state = done.stdout.strip()
    if not state:
        return Check("service", WARN, "no systemd user session; twinsync runs only while `twinsync run` does",
                     "log in with a systemd session (or `loginctl enable-linger`), then install/setup.sh --service")
    if state == "active":
        return Check("service", OK, f"{unit} is active")
    return Check("service", WARN, f"{unit} is {state}",
                 f"install/setup.sh --service --home {home} (or run `twinsync run` yourself)")


def check_daemon(node: Node) -> Check:
    """From the daemon's lock and heartbeat: is `twinsync run` there, and is all of it working?"""
    health = read_health(node.layout.home)
    if health.state == RUNNING:
        return Check("daemon", OK, health.message)
    if health.state == NOT_RUNNING:
        return Check("daemon", WARN, health.message, "twinsync run (or install/setup.sh --service)")
    if health.state == DEGRADED:
        return Check("daemon", WARN, health.message, "see the daemon's log; it retries by itself")
    return Check("daemon", FAIL, health.message,
                 f"kill {health.pid} and start `twinsync run` again" if health.pid else "restart `twinsync run`")


def check_identity(node: Node) -> list[Check]:
    """A node name that trusted peers know with another key would sign as that node."""
    try:
        node.check_identity()
    except IdentityError as exc:
        return [Check("node name", FAIL, str(exc).split(";")[0], f"set node.name in {node.layout.config} "
                      "back to this node's own name")]
    except TwinsyncError:
        return []  # a missing key or a broken trusted.toml is its own check's failure
    return [Check("node name", OK, f"{node.name} is this node's own name (no peer has it with another key)")]


def run_checks(node: Node) -> list[Check]:
    api = check_syncthing(node)
    return (check_programs(node.config.managed) + api + check_syncthing_setup(node, api_ok=api[0].level == OK)
            + check_key_files(node)
            + [check_inotify(node), check_service(node.layout.home), check_daemon(node), check_mqtt(node)]
            + check_identity(node))


def check_mqtt(node: Node) -> Check:
    """The broker the daemon sends status and alerts to; none set is fine."""
    health = broker_health(node.config.mqtt)
    if health.state == REACHABLE:
        return Check("MQTT broker", OK, health.message)
    if health.state == NOT_CONFIGURED:
        return Check("MQTT broker", OK, "not configured (set [mqtt] host to send status and alerts to one)")
    return Check("MQTT broker", WARN, health.message,
                 f"start the broker, or fix [mqtt] host and port in {node.layout.config}")
