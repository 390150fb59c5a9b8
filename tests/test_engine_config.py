"""Config of several coordinators on an engine: a node's and a client's list of coordinators, the
coordinator's ``[engine]`` table (zcraq/config.py, zcraq/client_config.py), and the local etcd a
config directory with an etcd.toml asks for (zcraq/local_engine.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from zcraq.client_config import client_setup, load_client_config
from zcraq.config import (MAX_COORDINATORS, ConfigError, CoordinatorConfig, EngineConfig, NodeConfig,
                          coordinator_config_from_dict, node_config_from_dict)
from zcraq.engine.local import LocalEtcd
from zcraq.local_engine import ETCD_FILE, local_engine

pytestmark = pytest.mark.timeout(60)

A = "tcp://127.0.0.1:7000"
B = "tcp://127.0.0.1:7010"
C = "tcp://127.0.0.1:7020"

NODE: dict[str, Any] = {
    "node": {
        "id": "n1",
        "coordinator": A,
        "service_port": 7101,
        "write_port": 7102,
        "ack_port": 7103,
        "data_dir": "data/n1",
    }
}
ETCD = ["http://127.0.0.1:2379", "http://127.0.0.1:2389", "http://127.0.0.1:2399"]


def node(coordinator: Any) -> NodeConfig:
    data = copy.deepcopy(NODE)
    data["node"]["coordinator"] = coordinator
    return node_config_from_dict(data, "etc/n1.toml")


def node_error(coordinator: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        node(coordinator)
    return info.value


def coordinator(engine: Any = None, path: str | Path = "etc/c.toml") -> CoordinatorConfig:
    data: dict[str, Any] = {"coordinator": {"state_dir": "state"}}
    if engine is not None:
        data["engine"] = engine
    return coordinator_config_from_dict(data, path)


def engine_error(**engine: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        coordinator(engine)
    return info.value


def endpoints(count: int) -> list[str]:
    return [f"tcp://127.0.0.1:{7000 + 10 * i}" for i in range(count)]


# ---------------------------------------------------------------------------------- a node's coordinators


def test_a_node_coordinator_may_be_one_endpoint() -> None:
    cfg = node(A)
    assert cfg.coordinator == A
    assert cfg.coordinators == (A,)


def test_a_node_coordinator_may_be_a_list_the_first_asked_first() -> None:
    cfg = node([B, A, C])
    assert cfg.coordinators == (B, A, C)
    assert cfg.coordinator == B


@pytest.mark.parametrize("count", [1, MAX_COORDINATORS])
def test_a_node_coordinator_list_of_1_to_9(count: int) -> None:
    assert MAX_COORDINATORS == 9
    listed = endpoints(count)
    cfg = node(listed)
    assert cfg.coordinators == tuple(listed)
    assert cfg.coordinator == listed[0]


@pytest.mark.parametrize("value", [
    [],
    endpoints(MAX_COORDINATORS + 1),
    [A, 7010],
    [A, None],
    [A, [B]],
], ids=["empty", "ten", "integer", "none", "nested"])
def test_a_node_coordinator_list_of_the_wrong_shape_is_refused(value: list[Any]) -> None:
    error = node_error(value)
    assert error.key == "node.coordinator"
    assert "list of 1 to 9 endpoints" in error.problem


@pytest.mark.parametrize("bad", ["http://127.0.0.1:7000", "tcp://127.0.0.1", "tcp://127.0.0.1:99999", ""])
def test_a_bad_endpoint_in_a_node_coordinator_list_is_refused(bad: str) -> None:
    error = node_error([A, bad])
    assert error.key == "node.coordinator"
    assert str(error).startswith("etc/n1.toml: node.coordinator: ")


def test_a_bad_single_node_coordinator_is_refused() -> None:
    assert node_error("tcp://127.0.0.1").key == "node.coordinator"
    assert node_error(7000).key == "node.coordinator"


def test_a_node_coordinator_listed_twice_is_refused() -> None:
    error = node_error([A, B, A])
    assert error.key == "node.coordinator"
    assert "twice" in error.problem


def test_a_node_without_a_coordinator_is_refused() -> None:
    data = copy.deepcopy(NODE)
    del data["node"]["coordinator"]
    with pytest.raises(ConfigError) as info:
        node_config_from_dict(data, "etc/n1.toml")
    assert info.value.key == "node.coordinator"


# ---------------------------------------------------------------------------------- the [engine] table


def test_without_an_engine_table_there_is_no_engine() -> None:
    assert coordinator().engine is None


def test_an_engine_table_with_its_defaults() -> None:
    engine = coordinator({"endpoints": ETCD}).engine
    assert engine == EngineConfig(tuple(ETCD), "/zcraq/", 2)
    assert isinstance(engine.endpoints, tuple)
    assert engine.leader_key == b"/zcraq/leader"
    assert engine.state_key == b"/zcraq/state"


def test_an_engine_table_with_every_key() -> None:
    engine = coordinator({"endpoints": ETCD[:1], "prefix": "/clusters/blue/", "lease_seconds": 60}).engine
    assert engine is not None
    assert engine.endpoints == (ETCD[0],)
    assert engine.prefix == "/clusters/blue/"
    assert engine.lease_seconds == 60
    assert engine.leader_key == b"/clusters/blue/leader"
    assert engine.state_key == b"/clusters/blue/state"


def test_an_engine_endpoint_may_name_a_host() -> None:
    engine = coordinator({"endpoints": ["http://etcd-1.example:2379", "http://[::1]:2379"]}).engine
    assert engine is not None and engine.endpoints == ("http://etcd-1.example:2379", "http://[::1]:2379")


@pytest.mark.parametrize("value", [
    None,  # missing
    [],
    "http://127.0.0.1:2379",
    [f"http://127.0.0.1:{2379 + 10 * i}" for i in range(10)],
    ["http://127.0.0.1:2379", 2389],
], ids=["missing", "empty", "string", "ten", "integer"])
def test_engine_endpoints_of_the_wrong_shape_are_refused(value: Any) -> None:
    error = engine_error(**({} if value is None else {"endpoints": value}))
    assert error.key == "engine.endpoints"
    assert "etcd client URLs" in error.problem


@pytest.mark.parametrize("bad", [
    "https://127.0.0.1:2379",
    "http://127.0.0.1",
    "tcp://127.0.0.1:2379",
    "http://:2379",
    "http://127.0.0.1:70000",
])
def test_an_engine_endpoint_that_is_not_http_host_port_is_refused(bad: str) -> None:
    error = engine_error(endpoints=[ETCD[0], bad])
    assert error.key == "engine.endpoints"
    assert str(error).startswith("etc/c.toml: engine.endpoints: ")


@pytest.mark.parametrize("prefix", ["zcraq/", "/zcraq", "/", "", "/with space/", "/é/", 7])
def test_an_engine_prefix_must_start_and_end_with_a_slash(prefix: Any) -> None:
    assert engine_error(endpoints=ETCD, prefix=prefix).key == "engine.prefix"


@pytest.mark.parametrize("seconds", [2, 30, 60])
def test_engine_lease_seconds_from_2_to_60(seconds: int) -> None:
    engine = coordinator({"endpoints": ETCD, "lease_seconds": seconds}).engine
    assert engine is not None and engine.lease_seconds == seconds


@pytest.mark.parametrize("seconds", [0, 1, 61, 2.5, "2", True])
def test_engine_lease_seconds_outside_2_to_60_are_refused(seconds: Any) -> None:
    error = engine_error(endpoints=ETCD, lease_seconds=seconds)
    assert error.key == "engine.lease_seconds"
    assert "from 2 to 60" in error.problem


def test_an_unknown_engine_key_is_refused_and_named() -> None:
    error = engine_error(endpoints=ETCD, lease_second=5)
    assert error.key == "engine.lease_second"
    assert "lease_seconds" in error.problem, "a hint names the key meant"


def test_an_engine_that_is_not_a_table_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        coordinator_config_from_dict({"coordinator": {"state_dir": "state"}, "engine": ETCD}, "etc/c.toml")
    assert info.value.key == "engine"


def test_a_node_file_takes_no_engine_table() -> None:
    data = copy.deepcopy(NODE)
    data["engine"] = {"endpoints": ETCD}
    with pytest.raises(ConfigError) as info:
        node_config_from_dict(data, "etc/n1.toml")
    assert info.value.key == "engine"


# ---------------------------------------------------------------------------------- the client's config file


def client_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "client.toml"
    path.write_text(body)
    return path


def test_a_client_file_lists_every_coordinator(tmp_path: Path) -> None:
    path = client_file(tmp_path, f'[client]\ncoordinator = ["{B}", "{A}", "{C}"]\ntimeout_ms = 1500\n')
    settings = load_client_config(path)
    assert settings.coordinators == (B, A, C)
    assert settings.timeout == 1.5
    setup = client_setup(None, None, path)
    assert setup.coordinator == B
    assert setup.coordinators == (B, A, C)
    assert setup.timeout == 1.5


def test_a_client_file_with_one_coordinator(tmp_path: Path) -> None:
    path = client_file(tmp_path, f'[client]\ncoordinator = "{C}"\n')
    assert load_client_config(path).coordinators == (C,)
    setup = client_setup(None, 3.0, path)
    assert (setup.coordinator, setup.coordinators, setup.timeout) == (C, (C,), 3.0)


def test_a_coordinator_argument_overrides_the_files_list(tmp_path: Path) -> None:
    path = client_file(tmp_path, f'[client]\ncoordinator = ["{A}", "{B}"]\n')
    setup = client_setup(C, None, path)
    assert setup.coordinator == C
    assert setup.coordinators == (C,)


@pytest.mark.parametrize("value", [
    "[]",
    "[" + ", ".join(f'"{e}"' for e in endpoints(10)) + "]",
    f'["{A}", 7010]',
    f'["{A}", "tcp://127.0.0.1"]',
    f'["{A}", "{A}"]',
], ids=["empty", "ten", "integer", "bad-endpoint", "twice"])
def test_a_client_files_bad_coordinator_list_is_refused(tmp_path: Path, value: str) -> None:
    path = client_file(tmp_path, f"[client]\ncoordinator = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_client_config(path)
    assert info.value.key == "client.coordinator"
    assert info.value.path == str(path)


# ---------------------------------------------------------------------------------- the local etcd


def etcd_dir(tmp_path: Path, body: str = '[etcd]\ndata_dir = "etcd"\n') -> Path:
    (tmp_path / ETCD_FILE).write_text(body)
    return tmp_path


def test_no_local_etcd_without_etcd_toml(tmp_path: Path) -> None:
    assert local_engine(tmp_path, coordinator({"endpoints": ETCD}, tmp_path / "c.toml")) is None
    assert local_engine(tmp_path, coordinator(None, tmp_path / "c.toml")) is None


def test_a_local_etcd_needs_coordinators_on_an_engine(tmp_path: Path) -> None:
    directory = etcd_dir(tmp_path)
    with pytest.raises(ConfigError) as info:
        local_engine(directory, coordinator(None, tmp_path / "c.toml"))
    assert info.value.key == "engine"
    assert info.value.path == str(tmp_path / "c.toml")


@pytest.mark.parametrize("bad", ["http://localhost:2389", "http://127.0.0.2:2389", "http://[::1]:2389",
                                 "http://etcd.example:2389"])
def test_a_local_etcd_needs_every_endpoint_on_127_0_0_1(tmp_path: Path, bad: str) -> None:
    directory = etcd_dir(tmp_path)
    with pytest.raises(ConfigError) as info:
        local_engine(directory, coordinator({"endpoints": [ETCD[0], bad]}, tmp_path / "c.toml"))
    assert info.value.key == "engine.endpoints"
    assert bad in info.value.problem


def test_a_local_etcd_serves_clients_on_each_port_and_peers_on_the_next(tmp_path: Path) -> None:
    directory = etcd_dir(tmp_path)
    etcd = local_engine(directory, coordinator({"endpoints": ETCD}, tmp_path / "c.toml"))
    assert isinstance(etcd, LocalEtcd)
    assert [(m.client_port, m.peer_port) for m in etcd.members] == [(2379, 2380), (2389, 2390), (2399, 2400)]
    assert etcd.endpoints == ETCD
    assert etcd.directory == tmp_path / "etcd"
    assert [m.data_dir for m in etcd.members] == [tmp_path / "etcd" / f"etcd{i}" for i in (1, 2, 3)]
    assert all(m.process is None for m in etcd.members), "nothing is started"
    assert not (tmp_path / "etcd").exists()


def test_a_local_etcd_data_dir_is_relative_to_etcd_toml(tmp_path: Path) -> None:
    directory = tmp_path / "configs"
    directory.mkdir()
    etcd_dir(directory, '[etcd]\ndata_dir = "../var/etcd"\n')
    etcd = local_engine(directory, coordinator({"endpoints": ETCD[:1]}, directory / "c.toml"))
    assert etcd is not None
    assert etcd.directory.resolve() == (tmp_path / "var" / "etcd").resolve()
    assert [(m.client_port, m.peer_port) for m in etcd.members] == [(2379, 2380)]


@pytest.mark.parametrize("body, key", [
    ("[etcd]\n", "etcd.data_dir"),
    ('[etcd]\ndata_dir = "etcd"\nport = 2379\n', "etcd.port"),
    ('[etcd]\ndata_dir = 5\n', "etcd.data_dir"),
    ('[coordinator]\nport = 7000\n', "coordinator"),
], ids=["no-data-dir", "unknown-key", "data-dir-integer", "a-coordinator-file"])
def test_a_bad_etcd_toml_is_refused(tmp_path: Path, body: str, key: str) -> None:
    directory = etcd_dir(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        local_engine(directory, coordinator({"endpoints": ETCD}, tmp_path / "c.toml"))
    assert info.value.key == key
    assert info.value.path == str(tmp_path / ETCD_FILE)
