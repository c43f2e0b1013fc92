"""A real mosquitto broker on 127.0.0.1 and a subscriber that records what it hears,
for the MQTT tests."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading

import paho.mqtt.client as mqtt
import pytest

from syncthing.process import free_port
from tests.conftest import wait_for


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


class Subscriber:
    """Every message under `topics`, by topic, in order of arrival."""

    def __init__(self, port: int, topics: tuple[str, ...] = ("twinsync/#",)) -> None:
        self.messages: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-subscriber")
        self.client.on_connect = lambda client, *_: client.subscribe([(t, 1) for t in topics])
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


@pytest.fixture
def mosquitto(tmp_path):
    broker = Broker(tmp_path)
    broker.start()
    yield broker
    broker.stop()
