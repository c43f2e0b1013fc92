"""The event bus: Syncthing's events drive live node status, and the daemon publishes status,
metrics and new conflicts to a real mosquitto broker on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading

import paho.mqtt.client as mqtt
import pytest

from syncthing.process import free_port
from orchestrator.heartbeat import read_health
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


class Broker:
    """A real mosquitto on 127.0.0.1 that a test can kill and start again on the same port."""

    def __init__(self, tmp_path) -> None:
        self.port = free_port()
        self.conf = tmp_path / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(self.listening, timeout=10, what="mosquitto to listen")

    def listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)


@pytest.fixture
def mosquitto(tmp_path):
    broker = Broker(tmp_path)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def broker(mosquitto):
    return mosquitto.port


class Subscriber:
    def __init__(self, port: int) -> None:
        self.messages: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-subscriber")
        self.client.on_connect = lambda client, *_: client.subscribe("twinsync/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.setdefault(message.topic, []).append(message.payload.decode())

    def last(self, topic: str):
        with self._lock:
            values = self.messages.get(topic)
        return values[-1] if values else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


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
