"""The event bus of seed §4.3: Syncthing's events API in, MQTT out.

`SyncthingEvents` long-polls Syncthing for device and folder events in its own thread with
its own HTTP session, and hands each one to a callback; the daemon turns them into live
node status (log lines) and MQTT messages. `MqttPublisher` is off unless [mqtt] host is
set; it keeps running when the broker is away (paho reconnects by itself), so a home
automation box that reboots never takes the daemon down.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from orchestrator.config import MqttSettings
from syncthing.client import SyncthingClient
from syncthing.errors import SyncthingError

logger = logging.getLogger(__name__)

#: The Syncthing events the daemon follows.
EVENT_TYPES = ["DeviceConnected", "DeviceDisconnected", "FolderCompletion", "ItemFinished"]
POLL_S = 5
RETRY_S = 5.0


class SyncthingEvents:
    def __init__(self, client: SyncthingClient, on_event: Callable[[dict[str, Any]], None]) -> None:
        self._client = client
        self._on_event = on_event
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="syncthing-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=POLL_S + self._client.timeout + 1)
        self._client.close()

    def _loop(self) -> None:
        since, down = None, False
        while not self._stop.is_set():
            try:
                if since is None:  # the first filtered call creates Syncthing's subscription
                    since = max((e["id"] for e in self._client.events(0, EVENT_TYPES, timeout=0)), default=0)
                events = self._client.events(since, EVENT_TYPES, timeout=POLL_S)
            except SyncthingError as exc:
                if not down:
                    logger.warning("Syncthing events unavailable (%s); retrying", str(exc).split(";")[0])
                down, since = True, None
                self._stop.wait(RETRY_S)
                continue
            down = False
            for event in events:
                since = max(since, event["id"])
                try:
                    self._on_event(event)
                except Exception:  # noqa: BLE001 - one bad handler call must not end the stream
                    logger.exception("handling Syncthing event %s failed", event.get("type"))


class MqttPublisher:
    """Publishes JSON under `<prefix>/<node>/...`; status messages are retained."""

    def __init__(self, settings: MqttSettings, node: str) -> None:
        self.base = f"{settings.prefix}/{node}"
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"twinsync-{node}")
        self._client.will_set(f"{self.base}/online", "false", qos=1, retain=True)
        self._client.on_connect = lambda client, *_: client.publish(f"{self.base}/online", "true", qos=1, retain=True)
        self._client.connect_async(settings.host, settings.port)
        self._client.loop_start()

    def publish(self, topic: str, payload: dict[str, Any], *, retain: bool = False) -> None:
        self._client.publish(f"{self.base}/{topic}", json.dumps(payload, sort_keys=True), qos=1, retain=retain)

    def close(self) -> None:
        info = self._client.publish(f"{self.base}/online", "false", qos=1, retain=True)
        if info.rc == mqtt.MQTT_ERR_SUCCESS and self._client.is_connected():
            info.wait_for_publish(2)
        self._client.disconnect()
        self._client.loop_stop()
