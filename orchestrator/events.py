"""The event bus of seed §4.3: Syncthing's events API in, MQTT out.

`SyncthingEvents` long-polls Syncthing for device and folder events and hands each one to
a callback; the daemon turns them into live node status (log lines) and MQTT messages.
Both run as supervised pieces of the daemon (`run(stop)`): when Syncthing goes away the
stream says so through `on_state` and resubscribes once it is back (Syncthing numbers its
events from 1 again after a restart), then calls `on_resync` with the current connections,
because the DeviceConnected events of the restart happened before the new subscription.
`MqttPublisher` is off unless [mqtt] host is set; it keeps running when the broker is away
(paho reconnects by itself), so a home automation box that reboots never takes the daemon
down. It also says when it is (re)connected and when Home Assistant restarts (its birth
message), so Home Assistant's discovery configs are sent again. `broker_health` is the
one-shot check of `status` and `doctor`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from orchestrator.config import MqttSettings
from orchestrator.homeassistant import STATUS_TOPIC
from syncthing.client import SyncthingClient
from syncthing.errors import SyncthingError

logger = logging.getLogger(__name__)

#: The Syncthing events the daemon follows.
EVENT_TYPES = ["DeviceConnected", "DeviceDisconnected", "FolderSummary", "ItemFinished", "StateChanged"]
#: Followed only for MQTT: Syncthing sends one per peer and folder on every index change, so
#: with N peers and N+2 folders a busy node would poll for them O(N²) times as often.
MQTT_EVENT_TYPES = ["FolderCompletion"]
POLL_S = 5
RETRY_S = 5.0


class SyncthingEvents:
    def __init__(self, client: SyncthingClient, on_event: Callable[[dict[str, Any]], None], *,
                 on_state: Callable[[str | None], None] = lambda problem: None,
                 on_resync: Callable[[dict[str, dict[str, Any]]], None] = lambda connections: None,
                 types: list[str] = EVENT_TYPES) -> None:
        self._client = client
        self._types = types
        self._on_event = on_event
        self._on_state = on_state
        self._on_resync = on_resync

    def run(self, stop: threading.Event) -> None:
        """Follow the stream until `stop`; Syncthing being away is a state, not an error."""
        since: int | None = None
        down = False
        while not stop.is_set():
            try:
                if since is None:  # the first filtered call creates Syncthing's subscription
                    since = max((e["id"] for e in self._client.events(0, self._types, timeout=0)), default=0)
                    connections = self._client.connections()
                    if down:
                        logger.info("Syncthing events resumed")
                    down = False
                    self._on_state(None)
                    self._handle(self._on_resync, connections, "catching up after (re)subscribing")
                events = self._client.events(since, self._types, timeout=POLL_S)
            except SyncthingError as exc:
                reason = str(exc).split(";")[0]
                if not down:
                    logger.warning("Syncthing events unavailable (%s); retrying", reason)
                down, since = True, None
                self._on_state(f"no events from Syncthing ({reason})")
                stop.wait(RETRY_S)
                continue
            for event in events:
                since = max(since, event["id"])
                self._handle(self._on_event, event, f"handling Syncthing event {event.get('type')}")

    @staticmethod
    def _handle(callback: Callable[[Any], None], value: Any, what: str) -> None:
        try:
            callback(value)
        except Exception:  # noqa: BLE001 - one bad handler call must not end the stream
            logger.exception("%s failed", what)


class MqttPublisher:
    """Publishes JSON under `<prefix>/<node>/...`; status messages are retained.

    `run` is paho's network loop in the daemon's supervised thread (an exception in a paho
    callback ends that loop, so the supervisor must see it); `close` says offline and ends
    it. A broker that does not answer is reported through `on_state`.
    """

    def __init__(self, settings: MqttSettings, node: str, *,
                 on_state: Callable[[str | None], None] = lambda problem: None,
                 on_online: Callable[[], None] = lambda: None) -> None:
        self.base = f"{settings.prefix}/{node}"
        self._where = f"{settings.host}:{settings.port}"
        self._on_state = on_state
        self._on_online = on_online
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"twinsync-{node}")
        self._client.will_set(f"{self.base}/online", "false", qos=1, retain=True)
        self._client.on_connect = self._connected
        self._client.on_message = self._message
        self._client.on_connect_fail = lambda *_: self._on_state(f"the MQTT broker at {self._where} does not answer")
        self._client.on_disconnect = self._disconnected
        self._client.connect_async(settings.host, settings.port)

    def _connected(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._on_state(f"the MQTT broker at {self._where} refused the connection ({reason})")
            return
        client.publish(f"{self.base}/online", "true", qos=1, retain=True)
        client.subscribe(STATUS_TOPIC, qos=1)
        self._on_state(None)
        self._on_online()

    def _message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == STATUS_TOPIC and message.payload == b"online":
            self._on_online()

    def _disconnected(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._on_state(f"lost the MQTT broker at {self._where} ({reason}); reconnecting")

    def run(self, stop: threading.Event) -> None:
        if not stop.is_set():
            self._client.loop_forever(retry_first_connection=True)

    def publish(self, topic: str, payload: dict[str, Any], *, retain: bool = False) -> None:
        self._client.publish(f"{self.base}/{topic}", json.dumps(payload, sort_keys=True), qos=1, retain=retain)

    def clear(self, topic: str) -> None:
        """Remove a retained message of ours (an empty retained message)."""
        self._client.publish(f"{self.base}/{topic}", "", qos=1, retain=True)

    def publish_discovery(self, topic: str, config: dict[str, Any] | None) -> None:
        """A Home Assistant discovery config (retained, outside our prefix); None removes
        the entity (an empty retained message)."""
        self._client.publish(topic, "" if config is None else json.dumps(config, sort_keys=True), qos=1, retain=True)

    def close(self) -> None:
        info = self._client.publish(f"{self.base}/online", "false", qos=1, retain=True)
        if info.rc == mqtt.MQTT_ERR_SUCCESS and self._client.is_connected():
            info.wait_for_publish(2)
        self._client.disconnect()
