"""Is the MQTT broker there? One CONNECT/CONNACK exchange, for `status` and `doctor`; kept
apart from the daemon's MQTT publisher so that asking costs no paho import when no broker is
set."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.config import MqttSettings

#: What `status` and `doctor` say about the broker.
REACHABLE, UNREACHABLE, NOT_CONFIGURED = "reachable", "unreachable", "not configured"


@dataclass(frozen=True)
class BrokerHealth:
    state: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def broker_health(settings: MqttSettings, *, timeout: float = 2.5) -> BrokerHealth:
    """Connects once as MQTT would (CONNECT, then CONNACK) and disconnects; never raises."""
    where = f"{settings.host}:{settings.port}"
    if not settings.host:
        return BrokerHealth(NOT_CONFIGURED, "no MQTT broker is set ([mqtt] host in twinsync.toml)")
    import paho.mqtt.client as mqtt  # only when a broker is set: `status --json` stays light

    answer: list[Any] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="")
    client.connect_timeout = timeout
    client.on_connect = lambda c, u, f, reason, p: answer.append(reason)
    try:
        client.connect(settings.host, settings.port, keepalive=10)
        deadline = time.monotonic() + timeout
        while not answer and time.monotonic() < deadline:
            client.loop(timeout=0.1)
    except (OSError, ValueError) as exc:
        return BrokerHealth(UNREACHABLE, f"the MQTT broker at {where} does not answer ({exc})")
    finally:
        client.disconnect()  # sends DISCONNECT when connected; the socket is ours to close
        sock = client.socket()
        if sock is not None:
            sock.close()
    if not answer:
        return BrokerHealth(UNREACHABLE, f"the MQTT broker at {where} accepted a connection but did not "
                                         f"answer MQTT in {timeout:g} s")
    if answer[0].is_failure:
        return BrokerHealth(UNREACHABLE, f"the MQTT broker at {where} refused the connection ({answer[0]})")
    return BrokerHealth(REACHABLE, f"the MQTT broker at {where} answers")
