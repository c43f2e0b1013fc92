"""A small typed client for the parts of Syncthing's REST API that twinsync uses.

It changes one folder or one device at a time (`/rest/config/folders/{id}`), never the
whole config, so a user's own folders and devices are never clobbered.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter

from syncthing.errors import (SyncthingAPIError, SyncthingAuthError, SyncthingBusyError,
                              SyncthingConfigError, SyncthingHungError, SyncthingUnavailable)
from syncthing.migration import is_migration_answer

DEFAULT_TIMEOUT = 10.0
#: How much of a value a message repeats: enough to recognise it, never a screenful.
ECHO_CHARS = 100


def _cap(value: str) -> str:
    return value if len(value) <= ECHO_CHARS else value[:ECHO_CHARS] + "…"


def _bad_url(url: str) -> str:
    return (f"The Syncthing address {_cap(url)!r} is not an http:// or https:// URL with a host; "
            "pass one like http://127.0.0.1:8384.")


def _reason(exc: BaseException) -> str:
    return _cap(str(exc).split("\n")[0])


def check_url(url: str) -> str:
    """Syncthing's API speaks only http(s); anything else (file://, a bare host:port) is
    refused here, before a request is made, with a sentence instead of a requests error."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port out of range or not a number raises ValueError here
    except (ValueError, TypeError):
        raise SyncthingConfigError(_bad_url(str(url))) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SyncthingConfigError(_bad_url(url))
    return url


class _NoHostnameAdapter(HTTPAdapter):
    """Syncthing's GUI certificate names the machine's host name (lib/api/api.go
    `getListener`), never 127.0.0.1, so the name check is off; the certificate itself is still
    checked, against that one file only."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_hostname"] = False
        super().init_poolmanager(*args, **kwargs)


class SyncthingClient:
    """One `requests.Session` per client; pass your own to share connection pools in tests.

    `cert` pins an HTTPS GUI to Syncthing's own `https-cert.pem` (the system CA store is not
    asked); an http:// address that Syncthing redirects to https:// (307) is followed with the
    same pin. `key_source` re-reads the key where the user may have regenerated it (config.xml):
    on a 401/403 the call is retried once with a changed key, and `on_new_key` is told.
    `key_hint` finishes the refused-key sentence with what the caller's user can do.
    """

    def __init__(self, url: str, api_key: str, *, timeout: float = DEFAULT_TIMEOUT,
                 session: requests.Session | None = None, cert: Path | None = None,
                 key_source: Callable[[], str | None] | None = None,
                 on_new_key: Callable[[str], None] | None = None,
                 key_hint: str = "pass it with --api-key") -> None:
        self.url = check_url(url).rstrip("/")
        self.timeout = timeout
        self.cert = cert
        self._session = session or requests.Session()
        # Syncthing is reached directly: a proxy named in the environment would receive the
        # API key with every call (requests bypasses it for 127.0.0.1 only when NO_PROXY
        # says so), and reading the environment costs a quarter of each call's CPU, which
        # the daemon's event long-poll pays many times a second.
        self._session.trust_env = False
        self._session.headers["X-API-Key"] = api_key
        self._verify: bool | str = True
        if cert is not None:
            self._verify = str(cert)
            self._session.mount("https://", _NoHostnameAdapter())
        self._key_source, self._on_new_key, self._key_hint = key_source, on_new_key, key_hint

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> SyncthingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------

    def _request(self, method: str, path: str, *, params: Any = None, json: Any = None,
                 timeout: float | None = None) -> Any:
        """Every way the call can fail becomes a `SyncthingError` with one sentence: a
        Syncthing killed mid-answer must not end the caller's thread with a requests error."""
        r = self._send(method, path, params=params, json=json, timeout=timeout)
        if r.status_code in (401, 403) and self._key_source is not None:
            old, new = self._session.headers["X-API-Key"], self._key_source()
            if new and new != old:
                self._session.headers["X-API-Key"] = new
                r = self._send(method, path, params=params, json=json, timeout=timeout)
                if r.status_code in (401, 403):
                    self._session.headers["X-API-Key"] = old
                elif self._on_new_key is not None:
                    self._on_new_key(new)
        if r.status_code in (401, 403):
            raise SyncthingAuthError(
                f"Syncthing at {self.url} refused the API key; copy the key from its GUI "
                f"(Actions → Settings → API Key) and {self._key_hint}.")
        if r.status_code >= 400:
            detail = r.text.strip().splitlines()[0] if r.text.strip() else r.reason
            raise SyncthingAPIError(
                f"Syncthing refused {method} {path} ({r.status_code}: {_cap(detail)}).", r.status_code)
        if not r.content:
            return None
        if is_migration_answer(r.headers.get("Content-Type"), r.content):
            raise self._busy()
        try:
            return r.json()
        except ValueError:
            raise SyncthingAPIError(
                f"{self.url} answered {method} {path} with something that is not JSON; "
                "check that the address is Syncthing's GUI/API address.", r.status_code) from None

    def _send(self, method: str, path: str, *, params: Any, json: Any,
              timeout: float | None) -> requests.Response:
        timeout = timeout or self.timeout
        try:
            # verify is passed on each call: a session's own would lose to $REQUESTS_CA_BUNDLE.
            return self._session.request(method, self.url + path, params=params, json=json,
                                         timeout=timeout, verify=self._verify)
        except requests.exceptions.ReadTimeout:
            raise SyncthingHungError(
                f"Syncthing at {self.url} is running but not answering ({method} {path} got no "
                f"answer in {timeout:g} s); wait if it is busy, or restart it.") from None
        except requests.Timeout:
            raise SyncthingUnavailable(
                f"Syncthing at {self.url} did not answer {method} {path} in time; "
                "check that it is running and not overloaded.") from None
        except requests.exceptions.SSLError as exc:
            if self.url.startswith("https://") and self._migrating_without_tls():
                raise self._busy() from None
            raise SyncthingUnavailable(self._tls_failure(exc)) from None
        except requests.ConnectionError:
            raise SyncthingUnavailable(
                f"Nothing answers at {self.url}; start Syncthing there (a node made with "
                "`init --managed` starts it with `twinsync syncthing start`).") from None
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema):
            raise SyncthingConfigError(_bad_url(self.url)) from None
        except requests.RequestException as exc:  # ChunkedEncodingError and the rest
            raise SyncthingUnavailable(
                f"Syncthing at {self.url} broke off its answer to {method} {path} "
                f"({type(exc).__name__}); it may have stopped or restarted, try again.") from None

    def _busy(self) -> SyncthingBusyError:
        return SyncthingBusyError(
            f"Syncthing at {self.url} is busy migrating its database; wait for it to finish "
            "(it can take a while on a first start after an upgrade) and do not stop it.")

    def _migrating_without_tls(self) -> bool:
        """The migration server speaks plain HTTP even where the GUI is HTTPS, so a failed
        handshake may be a migrating 2.x: ask the same address over http once."""
        try:
            r = self._session.get("http://" + self.url.removeprefix("https://") + "/rest/system/ping",
                                  timeout=self.timeout, allow_redirects=False)
        except requests.RequestException:
            return False
        return is_migration_answer(r.headers.get("Content-Type"), r.content)

    def _tls_failure(self, exc: BaseException) -> str:
        if self.cert is not None and "certificate verify failed" in str(exc):
            return (f"Syncthing at {self.url} presented a certificate that is not the one in "
                    f"{self.cert}; if that file was replaced, restart Syncthing so it uses it, "
                    "otherwise check that the address is this Syncthing's.")
        if self.cert is None and "certificate verify failed" in str(exc):
            return (f"Syncthing at {self.url} uses a certificate twinsync cannot check: its "
                    "https-cert.pem was not found next to the config.xml of this Syncthing; "
                    "run twinsync on the machine Syncthing runs on, with access to its config.")
        return (f"The TLS handshake with Syncthing at {self.url} failed ({_reason(exc)}); "
                "check the address's http/https and Syncthing's GUI certificate.")

    def _get(self, path: str, **params: Any) -> Any:
        return self._request("GET", path, params=params or None)

    def _get_or_none(self, path: str) -> Any:
        """GET a config object that may not exist: None instead of a 404 error."""
        try:
            return self._get(path)
        except SyncthingAPIError as exc:
            if exc.status == 404:
                return None
            raise

    # -- system ------------------------------------------------------------------------

    def ping(self) -> bool:
        return self._get("/rest/system/ping") == {"ping": "pong"}

    def version(self) -> dict[str, Any]:
        return self._get("/rest/system/version")

    def status(self) -> dict[str, Any]:
        return self._get("/rest/system/status")

    def my_device_id(self) -> str:
        return self.status()["myID"]

    def connections(self) -> dict[str, dict[str, Any]]:
        """Device ID → connection state (`connected`, `address`, ...)."""
        return self._get("/rest/system/connections")["connections"]

    def device_stats(self) -> dict[str, dict[str, Any]]:
        """Device ID → `lastSeen` and friends."""
        return self._get("/rest/stats/device")

    def options(self) -> dict[str, Any]:
        return self._get("/rest/config/options")

    def patch_options(self, changes: dict[str, Any]) -> None:
        self._request("PATCH", "/rest/config/options", json=changes)

    # -- folders -----------------------------------------------------------------------

    def folders(self) -> list[dict[str, Any]]:
        return self._get("/rest/config/folders")

    def folder(self, folder_id: str) -> dict[str, Any] | None:
        """The folder's config, or None when Syncthing has no such folder."""
        return self._get_or_none(f"/rest/config/folders/{quote(folder_id, safe='')}")

    def put_folder(self, folder: dict[str, Any]) -> None:
        """Create or replace ONE folder; fields not given take Syncthing's folder defaults."""
        full = {**self._get("/rest/config/defaults/folder"), **folder}
        self._request("PUT", f"/rest/config/folders/{quote(folder['id'], safe='')}", json=full)

    def patch_folder(self, folder_id: str, changes: dict[str, Any]) -> None:
        self._request("PATCH", f"/rest/config/folders/{quote(folder_id, safe='')}", json=changes)

    def delete_folder(self, folder_id: str) -> None:
        self._request("DELETE", f"/rest/config/folders/{quote(folder_id, safe='')}")

    def set_ignores(self, folder_id: str, patterns: list[str]) -> None:
        self._request("POST", "/rest/db/ignores", params={"folder": folder_id},
                      json={"ignore": patterns})

    def scan(self, folder_id: str, subs: list[str] | None = None) -> None:
        """Ask for a scan now (of just `subs` when given) instead of waiting for the watcher delay."""
        params: list[tuple[str, str]] = [("folder", folder_id)]
        params += [("sub", s) for s in subs or []]
        self._request("POST", "/rest/db/scan", params=params)

    def folder_status(self, folder_id: str) -> dict[str, Any]:
        return self._get("/rest/db/status", folder=folder_id)

    def file(self, folder_id: str, path: str) -> dict[str, Any] | None:
        """What Syncthing knows of one file (`global`, `local`: version, `deleted`,
        `modifiedBy`), or None when it knows nothing of it."""
        try:
            return self._get("/rest/db/file", folder=folder_id, file=path)
        except SyncthingAPIError as exc:
            if exc.status == 404:
                return None
            raise

    def revert(self, folder_id: str) -> None:
        """Undo what was changed on this machine in a receive-only folder; Syncthing answers at
        once and brings the other devices' versions back in the background."""
        self._request("POST", "/rest/db/revert", params={"folder": folder_id})

    def completion(self, folder_id: str | None = None, device_id: str | None = None) -> dict[str, Any]:
        params = {k: v for k, v in (("folder", folder_id), ("device", device_id)) if v}
        return self._get("/rest/db/completion", **params)

    # -- devices -----------------------------------------------------------------------

    def devices(self) -> list[dict[str, Any]]:
        return self._get("/rest/config/devices")

    def device(self, device_id: str) -> dict[str, Any] | None:
        return self._get_or_none(f"/rest/config/devices/{quote(device_id, safe='')}")

    def put_device(self, device: dict[str, Any]) -> None:
        full = {**self._get("/rest/config/defaults/device"), **device}
        self._request("PUT", f"/rest/config/devices/{quote(device['deviceID'], safe='')}", json=full)

    def patch_device(self, device_id: str, changes: dict[str, Any]) -> None:
        self._request("PATCH", f"/rest/config/devices/{quote(device_id, safe='')}", json=changes)

    def delete_device(self, device_id: str) -> None:
        self._request("DELETE", f"/rest/config/devices/{quote(device_id, safe='')}")

    # -- events ------------------------------------------------------------------------

    def events(self, since: int = 0, events: list[str] | None = None, timeout: int = 60,
               limit: int | None = None) -> list[dict[str, Any]]:
        """Long-poll: returns when events newer than `since` exist or after `timeout` seconds.

        Syncthing makes a subscription per `events` filter on its first use, so a filtered
        stream only holds events from that first call on: ask once before you need them.
        """
        params: dict[str, Any] = {"since": since, "timeout": timeout}
        if events:
            params["events"] = ",".join(events)
        if limit:
            params["limit"] = limit
        return self._request("GET", "/rest/events", params=params, timeout=timeout + self.timeout) or []
