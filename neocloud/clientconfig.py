"""Where an API client's settings come from: arguments, then `NEOCLOUD_*` environment
variables, then a TOML file (`$XDG_CONFIG_HOME/neocloud/config.toml`, by default
`~/.config/neocloud/config.toml`). The first source that sets a setting wins; the token
and the token file are one setting, so a token in the environment beats a token file
named in the config file. Paths in the file are relative to the file's folder.

    # ~/.config/neocloud/config.toml
    server = "api.neocloud.example.com:7444"
    ca = "ca.pem"
    token_file = "token"

Errors (ClientConfigError) name the file or variable and the key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PathArg = str | os.PathLike[str]

CONFIG_ENV = "NEOCLOUD_CONFIG"
# Setting -> its environment variable; the config file's keys are the settings' names.
ENV_VARS: Mapping[str, str] = {
    "server": "NEOCLOUD_SERVER",
    "token": "NEOCLOUD_TOKEN",
    "token_file": "NEOCLOUD_TOKEN_FILE",
    "ca": "NEOCLOUD_CA",
    "cert": "NEOCLOUD_CERT",
    "key": "NEOCLOUD_KEY",
    "insecure": "NEOCLOUD_INSECURE",
}
_PATHS = frozenset({"token_file", "ca", "cert", "key"})
_TRUE, _FALSE = frozenset({"1", "true", "yes"}), frozenset({"0", "false", "no", ""})
MAX_TOKEN_FILE_BYTES = 4096


class ClientConfigError(ValueError):
    """The client cannot be set up as given: no token, a malformed server address, `insecure`
    to a host that is not loopback, an unusable certificate, token or config file; the message
    says what to fix.

    A ValueError, as `neocloud.wire.tls.TlsConfigError` is, because the fault is in the values
    passed to the constructor (or the environment), found before anything is sent. It is not a
    `NeocloudError`: that hierarchy is what the scheduler reports about requests, and it maps
    to gRPC status codes; a call that reaches the server and fails raises `grpc.RpcError`.
    """


@dataclass(frozen=True)
class ClientSettings:
    """What `neocloud.client.Client` takes, resolved from every source."""

    server: str | None = None
    token: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: bool = False


def default_config_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or Path(env.get("HOME") or Path.home()) / ".config"
    return Path(base) / "neocloud" / "config.toml"


def resolve(
    given: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: PathArg | None = None,
) -> ClientSettings:
    """Settings from `given` (e.g. command-line options; None or "" is not given), then `env`
    (os.environ by default), then `config_file` ($NEOCLOUD_CONFIG, else the default path,
    which may be absent; a file named explicitly must exist)."""
    env = os.environ if env is None else env
    given = {k: v for k, v in (given or {}).items() if v not in (None, "", False)}
    unknown = set(given) - set(ENV_VARS)
    if unknown:
        raise TypeError(f"unknown client settings: {', '.join(sorted(unknown))}")
    from_env = {name: env[var] for name, var in ENV_VARS.items() if env.get(var)}
    path = config_file or env.get(CONFIG_ENV)
    from_file = _read_file(Path(path), required=True) if path else _read_file(default_config_path(env), required=False)
    sources: list[tuple[str, dict[str, Any]]] = [("arguments", given), ("environment", from_env), *from_file]
    values: dict[str, Any] = {}
    for name in ("server", "ca", "cert", "key", "insecure"):
        values[name] = next((src[name] for _, src in sources if name in src), None)
    values["insecure"] = _bool(values["insecure"])
    values["token"] = _token(sources)
    return ClientSettings(**values)


def _read_file(path: Path, required: bool) -> list[tuple[str, dict[str, Any]]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        if required:
            raise ClientConfigError(f"{path}: no such config file") from e
        return []
    except OSError as e:
        raise ClientConfigError(f"{path}: cannot read the config file: {e.strerror or e}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ClientConfigError(f"{path}: not valid TOML: {e}") from e
    settings: dict[str, Any] = {}
    for key, value in data.items():
        if key not in ENV_VARS:
            raise ClientConfigError(f"{path}: unknown key {key!r} (known: {', '.join(ENV_VARS)})")
        wanted = bool if key == "insecure" else str
        if not isinstance(value, wanted):
            raise ClientConfigError(f"{path}: key {key!r} must be a {'boolean' if wanted is bool else 'string'}")
        settings[key] = str(path.parent / os.path.expanduser(str(value))) if key in _PATHS else value
    return [(str(path), settings)]


def _bool(value: object) -> bool:
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ClientConfigError(f"{ENV_VARS['insecure']}: {value!r} is not true or false")


def _token(sources: list[tuple[str, dict[str, Any]]]) -> str | None:
    """The token of the first source that names a token or a token file (not both)."""
    for where, src in sources:
        if "token" in src and "token_file" in src:
            raise ClientConfigError(f"{where}: set the token or the token file, not both")
        if "token" in src:
            return str(src["token"])
        if "token_file" in src:
            return _read_token(Path(src["token_file"]), where)
    return None


def _read_token(path: Path, where: str) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as e:
        raise ClientConfigError(f"{where}: token_file {path}: {e.strerror or e}") from e
    token = data.decode("utf-8", errors="replace").strip()
    if not token or len(data) > MAX_TOKEN_FILE_BYTES or any(c.isspace() for c in token):
        raise ClientConfigError(f"{where}: token_file {path} does not hold one token")
    return token
