"""Alerts leave the daemon for a real mosquitto broker with Home Assistant discovery, and
for the desktop through `notify-send`; `doctor` and `status` say whether the broker answers."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.conftest import wait_for
from tests.integration.brokers import Subscriber, mosquitto  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration

DISCOVERY = "homeassistant/{}/twinsync_node1/{}/config"


def _use_broker(node, port: int) -> None:
    config = node.home / "twinsync.toml"
    config.write_text(config.read_text().replace('host = ""', 'host = "127.0.0.1"')
                      .replace("port = 1883", f"port = {port}").replace("interval_s = 15", "interval_s = 1"))


def _fake_notify_send(tmp_path, monkeypatch):
    """A stand-in for libnotify's notify-send that writes its arguments, one call a line,
    found on PATH by the daemon as the real one would be, in a desktop session."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "notify-send.calls"
    script = bin_dir / "notify-send"
    script.write_text(f'#!/bin/sh\nprintf "%s|" "$@" >> {calls}\necho >> {calls}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DISPLAY", ":99")
    return calls


def test_home_assistant_discovery_alerts_desktop_and_broker_health(mesh, daemon_factory, mosquitto, tmp_path,
                                                                    monkeypatch):
    a, b = mesh(2)
    assert json.loads(a.cli("status", "--json").output)["mqtt"]["state"] == "not configured"
    assert "ok   MQTT broker: not configured (set [mqtt] host to send" in a.cli("doctor", ok=False).output
    _use_broker(a, mosquitto.port)
    calls = _fake_notify_send(tmp_path, monkeypatch)
    subscriber = Subscriber(mosquitto.port, ("twinsync/#", "homeassistant/#"))
    try:
        daemon_factory(a)
        topics = {DISCOVERY.format("binary_sensor", "daemon"), DISCOVERY.format("sensor", "queue"),
                  DISCOVERY.format("event", "alert"), DISCOVERY.format("binary_sensor", "peer_node2")}
        wait_for(lambda: all(subscriber.last(t) for t in topics), timeout=30, what="discovery configs")
        daemon = json.loads(subscriber.last(DISCOVERY.format("binary_sensor", "daemon")))
        assert daemon["device_class"] == "problem" and daemon["state_topic"] == "twinsync/node1/health"
        assert daemon["availability_topic"] == "twinsync/node1/online"
        assert daemon["device"]["identifiers"] == ["twinsync_node1"]
        peer = json.loads(subscriber.last(DISCOVERY.format("binary_sensor", "peer_node2")))
        assert peer["device_class"] == "connectivity" and peer["state_topic"] == "twinsync/node1/peers/node2"
        queue = json.loads(subscriber.last(DISCOVERY.format("sensor", "queue")))
        assert queue["value_template"] == "{{ value_json.open }}"
        wait_for(lambda: subscriber.last("twinsync/node1/queue") == '{"open": 0}', timeout=30, what="queue 0")
        wait_for(lambda: subscriber.last("twinsync/node1/health")
                 and json.loads(subscriber.last("twinsync/node1/health"))["problem"] is False, timeout=30,
                 what="health without problem")

        (a.home / "frames.shared/notes").mkdir(parents=True, exist_ok=True)
        (a.home / "frames.shared/notes/bad.frame.json").write_text("{not json")
        wait_for(lambda: subscriber.last("twinsync/node1/queue") == '{"invalid": 1, "open": 1}', timeout=30,
                 what="queue 1")
        alert = json.loads(wait_for(lambda: subscriber.last("twinsync/node1/alerts"), timeout=30, what="alert"))
        assert alert["event_type"] == "queue" and alert["subject"] == "node1"
        assert "An invalid file on notes/bad.frame.json" in alert["sentence"]
        sent = wait_for(lambda: calls.exists() and calls.read_text(), timeout=30, what="a desktop notification")
        assert "--app-name=twinsync|" in sent and "An invalid file on notes/bad.frame.json" in sent
        assert sent.count("An invalid file") == 1  # once, not every second

        doctor = a.cli("doctor", ok=False).output
        assert f"ok   MQTT broker: the MQTT broker at 127.0.0.1:{mosquitto.port} answers" in doctor
        assert json.loads(a.cli("status", "--json").output)["mqtt"]["state"] == "reachable"

        a.cli("unpair", "node2", "--yes")  # its entity goes away: an empty retained config
        wait_for(lambda: subscriber.last(DISCOVERY.format("binary_sensor", "peer_node2")) == "", timeout=30,
                 what="the peer's entity removed")
        wait_for(lambda: subscriber.last("twinsync/node1/peers/node2") == "", timeout=30, what="its state removed")
    finally:
        subscriber.close()
    mosquitto.stop()
    doctor = a.cli("doctor", ok=False).output
    assert f"warn MQTT broker: the MQTT broker at 127.0.0.1:{mosquitto.port} does not answer" in doctor
    status = a.cli("status").output
    assert "mqtt       unreachable: the MQTT broker" in status
