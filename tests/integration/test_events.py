"""The event bus: Syncthing's events drive live node status, and the daemon publishes status,
metrics and new conflicts to a real mosquitto broker on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading

import paho.mqtt.client as mqtt
import pytest

from syncthing.process import free_port
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path):
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, timeout=10, what="mosquitto to listen")
    yield port
    proc.terminate()
    proc.wait(10)


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
