"""`status` and `doctor`'s broker check against what a broker can be instead of one:
nothing set, nothing listening, and a port that takes the connection but never speaks MQTT."""

from __future__ import annotations

import socket
import time

from orchestrator.config import MqttSettings
from orchestrator.broker import NOT_CONFIGURED, UNREACHABLE, broker_health
from syncthing.process import free_port


def test_not_configured_and_nothing_listening():
    assert broker_health(MqttSettings()).state == NOT_CONFIGURED
    port = free_port()
    health = broker_health(MqttSettings(host="127.0.0.1", port=port))
    assert health.state == UNREACHABLE and health.message.startswith(f"the MQTT broker at 127.0.0.1:{port} does not answer")


def test_a_silent_listener_is_unreachable_after_the_timeout_not_a_hang():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        health = broker_health(MqttSettings(host="127.0.0.1", port=port), timeout=0.5)
        assert time.monotonic() - started < 3
    assert health.state == UNREACHABLE
    assert health.message == (f"the MQTT broker at 127.0.0.1:{port} accepted a connection but did not answer "
                              "MQTT in 0.5 s")
