"""Home Assistant MQTT discovery: the retained config messages that make a node's entities
appear in Home Assistant by themselves (https://www.home-assistant.io/integrations/mqtt/
#mqtt-discovery), pointing at the state topics the daemon publishes under
`<prefix>/<node>/`:

- `binary_sensor` *daemon problem* (device class `problem`) on `health`;
- `binary_sensor` *<peer> connected* (device class `connectivity`) on `peers/<peer>`;
- `sensor` *queue* (open items to rule on) on `queue`;
- `event` *alert* on `alerts`, one event per alert raised, typed by its kind.

Every entity is unavailable while the daemon is offline (`online` is its will topic).
"""

from __future__ import annotations

import re
from typing import Any

from folders.alerts import KINDS

DISCOVERY_PREFIX = "homeassistant"
#: Home Assistant's birth message: it asks every device to send its discovery again.
STATUS_TOPIC = f"{DISCOVERY_PREFIX}/status"


def object_id(text: str) -> str:
    """Discovery topic parts allow only letters, digits, `_` and `-`."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def discovery(prefix: str, node: str, peers: list[str], version: str) -> dict[str, dict[str, Any]]:
    """Discovery topic → config payload for every entity of `node`."""
    base = f"{prefix}/{node}"
    node_id = object_id(f"twinsync_{node}")
    common = {"availability_topic": f"{base}/online", "payload_available": "true",
              "payload_not_available": "false",
              "device": {"identifiers": [node_id], "name": f"twinsync {node}", "manufacturer": "twinsync",
                         "model": "twinsync node", "sw_version": version}}

    def entity(component: str, obj: str, name: str, **config: Any) -> tuple[str, dict[str, Any]]:
        unique = f"{node_id}_{object_id(obj)}"
        return (f"{DISCOVERY_PREFIX}/{component}/{node_id}/{object_id(obj)}/config",
                {"name": name, "unique_id": unique, **common, **config})

    entities = [
        entity("binary_sensor", "daemon", "daemon problem", device_class="problem",
               state_topic=f"{base}/health", json_attributes_topic=f"{base}/health",
               value_template="{{ 'ON' if value_json.problem else 'OFF' }}"),
        entity("sensor", "queue", "queue", state_topic=f"{base}/queue", json_attributes_topic=f"{base}/queue",
               value_template="{{ value_json.open }}", unit_of_measurement="items", state_class="measurement",
               icon="mdi:scale-balance"),
        entity("event", "alert", "alert", state_topic=f"{base}/alerts", event_types=list(KINDS),
               icon="mdi:bell-alert"),
        *(entity("binary_sensor", f"peer_{peer}", f"{peer} connected", device_class="connectivity",
                 state_topic=f"{base}/peers/{peer}", json_attributes_topic=f"{base}/peers/{peer}",
                 value_template="{{ 'ON' if value_json.connected else 'OFF' }}")
          for peer in sorted(peers)),
    ]
    return dict(entities)


def peer_topic(node: str, peer: str) -> str:
    """The discovery topic of a peer's entity, emptied when the peer is unpaired."""
    return f"{DISCOVERY_PREFIX}/binary_sensor/{object_id(f'twinsync_{node}')}/{object_id(f'peer_{peer}')}/config"
