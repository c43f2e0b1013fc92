"""The event bus: Syncthing's events drive live node status, and the daemon publishes status,
metrics and new conflicts to a real mosquitto broker on 127.0.0.1."""

from __future__ import annotations

import json
import signal

import pytest

from orchestrator.heartbeat import read_health
from tests.conftest import wait_for
from tests.integration.brokers import Subscriber, mosquitto  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(mosquitto):
    return mosquitto.port


def test_daemon_publishes_status_metrics_and_conflicts_to_mqtt(mesh, daemon_factory, broker):
    a, b = mesh(2)
    config = a.home / "twinsync.toml"
    config.write_text(config.read_text().replace('host = ""', 'host = "127.0.0.1"')
                      .replace("port = 1883", f"port = {broker}"))
    subscriber = Subscriber(broker)
    try:
        daemon = daemon_factory(a)
        wait_for(lambda: subscriber.last("twinsync/node1/online") == "true", timeout=20, what="online")
        wait_for(lambda: subscriber.last("twinsync/node1/metrics"), timeout=30, what="metrics")
        assert set(json.loads(subscriber.last("twinsync/node1/metrics"))["metrics"]) == {
            "convergence", "conflict_rate", "access_p95_ms", "routes_per_goal"}

        (a.home / "frames.shared/notes").mkdir(parents=True, exist_ok=True)
        (a.home / "frames.shared/notes/bad.frame.json").write_text("{not json")
        wait_for(lambda: subscriber.last("twinsync/node1/conflicts"), timeout=20, what="a conflicts message")
        assert json.loads(subscriber.last("twinsync/node1/conflicts"))["invalid"] == ["notes/bad.frame.json"]

        b.syncthing.stop()
        wait_for(lambda: subscriber.last("twinsync/node1/peers/node2")
                 and not json.loads(subscriber.last("twinsync/node1/peers/node2"))["connected"],
                 timeout=30, what="node2 reported disconnected")
        assert "peer node2 disconnected" in daemon.log()
        assert daemon.stop() == 0
        wait_for(lambda: subscriber.last("twinsync/node1/online") == "false", timeout=10, what="offline")
    finally:
        subscriber.close()


def test_mqtt_broker_killed_and_started_again_degrades_then_heals_the_daemon(node_factory, daemon_factory, mosquitto):
    a = node_factory("node1")
    config = a.home / "twinsync.toml"
    config.write_text(config.read_text().replace('host = ""', 'host = "127.0.0.1"')
                      .replace("port = 1883", f"port = {mosquitto.port}"))
    subscriber = Subscriber(mosquitto.port)
    try:
        daemon = daemon_factory(a)
        wait_for(lambda: subscriber.last("twinsync/node1/online") == "true", timeout=20, what="online")
        wait_for(lambda: read_health(a.home).state == "running", timeout=20, what="health running")
    finally:
        subscriber.close()
    mosquitto.stop(signal.SIGKILL)
    health = wait_for(lambda: (h := read_health(a.home)).state == "degraded" and h, timeout=30, what="degraded")
    assert f"mqtt is degraded: lost the MQTT broker at 127.0.0.1:{mosquitto.port}" in health.message
    mosquitto.start()
    subscriber = Subscriber(mosquitto.port)
    try:
        wait_for(lambda: read_health(a.home).state == "running", timeout=60, what="health running again")
        wait_for(lambda: subscriber.last("twinsync/node1/online") == "true", timeout=20, what="online again")
    finally:
        subscriber.close()
    assert daemon.proc.poll() is None and "Traceback" not in daemon.log()
