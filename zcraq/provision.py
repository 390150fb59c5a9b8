"""Keys for a secured local cluster, created where its config files expect them.

``zcraq run --config-dir DIR`` calls ``provision`` before it starts anything: every ``[security]``
certificate a config names but that does not exist yet is created (``zcraq keygen``), and its
public half is put into the allow-list of its role - nodes into ``nodes``, clients (``client*.toml``)
into ``clients``, administrators (``admin*.toml``) into ``admins`` - so the first start of a fresh
checkout runs with CURVE and no manual step. Keys that exist are never touched.

A production cluster is provisioned by its operator instead (README, "Keys for a chain of three
machines").
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from zcraq.client_config import load_client_config
from zcraq.config import CoordinatorConfig, NodeConfig
from zcraq.security import create_certificate

log = logging.getLogger("zcraq.provision")

SECRET_SUFFIX = ".key_secret"


def provision(coordinator: CoordinatorConfig, nodes: list[NodeConfig], clients: list[Path], admins: list[Path]) -> list[Path]:
    """Create the missing keys of a local cluster's configs; returns the secret files created."""
    security = coordinator.security
    if security is None:
        return []
    created = []
    for directory in (security.nodes, security.clients, security.admins):
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
    if (found := _ensure(security.certificate, None)) is not None:
        created.append(found)
    for node in nodes:
        if node.security is not None and (found := _ensure(node.security.certificate, security.nodes)) is not None:
            created.append(found)
    for paths, allow_list in ((clients, security.clients), (admins, security.admins)):
        for path in paths:
            settings = load_client_config(path)
            if settings.certificate is not None and (found := _ensure(settings.certificate, allow_list)) is not None:
                created.append(found)
    return created


def _ensure(secret: Path, allow_list: Path | None) -> Path | None:
    """Create ``secret`` (and its public half) if missing, and put the public key into
    ``allow_list``; the secret file's path if it was created."""
    if not secret.name.endswith(SECRET_SUFFIX):
        raise ValueError(f"{secret}: a certificate file name ends with {SECRET_SUFFIX}")
    name = secret.name[: -len(SECRET_SUFFIX)]
    public = secret.with_name(name + ".key")
    made = None
    if not secret.exists():
        made = create_certificate(secret.parent, name)
        log.info("created the key pair %s", secret)
    if allow_list is not None and not (allow_list / public.name).exists():
        shutil.copyfile(public, allow_list / public.name)
    return made
