"""The local etcd cluster ``zcraq run`` starts for a config directory with an ``etcd.toml``.

    [etcd]
    data_dir = "../../var/ha/etcd"   # required; relative to this file

Its members are the coordinators' ``[engine] endpoints``, which must then all be
``http://127.0.0.1:PORT``: each member serves clients on PORT and its peers on PORT + 1. Meant
for trying coordinators on an engine on one machine (config/ha/); a production cluster runs an
etcd of its own (README: production layout).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from zcraq.config import CoordinatorConfig
from zcraq.engine.local import LocalEtcd
from zcraq.toml_tables import ConfigError, Table, base_dir, check_top_level, read_toml

ETCD_FILE = "etcd.toml"


def local_engine(directory: Path, coordinator: CoordinatorConfig) -> LocalEtcd | None:
    """The local etcd of ``directory`` (None: it has no etcd.toml). ConfigError: the file or the
    coordinators' endpoints do not fit; OSError: no etcd server is installed."""
    path = directory / ETCD_FILE
    if not path.exists():
        return None
    data = read_toml(path)
    check_top_level(str(path), data, "etcd", "coordinator", ())
    table = Table(str(path), "etcd", data["etcd"], ("data_dir",))
    data_dir = table.get_path("data_dir", base_dir(path))
    engine = coordinator.engine
    if engine is None:
        raise ConfigError(str(coordinator.path), "engine", f"missing: {path} starts a local etcd for the "
                                                           "coordinators' [engine], and they have none")
    ports = []
    for endpoint in engine.endpoints:
        parts = urlsplit(endpoint)
        if parts.hostname != "127.0.0.1" or parts.port is None:
            raise ConfigError(str(coordinator.path), "engine.endpoints",
                              f"{endpoint} is not http://127.0.0.1:PORT, and {path} starts a local etcd on them")
        ports.append((parts.port, parts.port + 1))
    return LocalEtcd(data_dir, len(ports), ports)


__all__ = ["ETCD_FILE", "local_engine"]
