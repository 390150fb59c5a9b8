"""Config loading: the shipped files, every class of error, and path resolution."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from zcraq.config import (
    ConfigError,
    CoordinatorConfig,
    Limits,
    NodeConfig,
    coordinator_config_from_dict,
    default_coordinator_endpoint,
    load_coordinator_config,
    load_node_config,
    node_config_from_dict,
    parse_endpoint,
)

from zcraq.store.version_index import DEFAULT_MAX_KEYS

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "config"

NODE: dict[str, Any] = {
    "node": {
        "id": "n1",
        "coordinator": "tcp://127.0.0.1:7000",
        "service_port": 7101,
        "write_port": 7102,
        "ack_port": 7103,
        "data_dir": "data/n1",
    }
}
COORDINATOR: dict[str, Any] = {"coordinator": {"state_dir": "state"}}


def node(path: str = "etc/n1.toml", limits: dict[str, Any] | None = None, **node_keys: Any) -> NodeConfig:
    data = copy.deepcopy(NODE)
    data["node"].update(node_keys)
    if limits is not None:
        data["limits"] = limits
    return node_config_from_dict(data, path)


def coordinator(path: str = "etc/c.toml", **keys: Any) -> CoordinatorConfig:
    data = copy.deepcopy(COORDINATOR)
    data["coordinator"].update(keys)
    return coordinator_config_from_dict(data, path)


def node_error(**node_keys: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        node(**node_keys)
    return info.value


def without(key: str) -> dict[str, Any]:
    data = copy.deepcopy(NODE)
    del data["node"][key]
    return data


# ---------------------------------------------------------------------------------------------
# Shipped files


def test_shipped_coordinator_config() -> None:
    cfg = load_coordinator_config(CONFIG_DIR / "coordinator.toml")
    assert cfg.endpoint == "tcp://127.0.0.1:7000"
    assert cfg.publish_endpoint == "tcp://127.0.0.1:7001"
    assert cfg.request_bind_endpoint == "tcp://127.0.0.1:7000"
    assert cfg.publish_bind_endpoint == "tcp://127.0.0.1:7001"
    assert cfg.state_dir == REPO / "var" / "coordinator"
    assert (cfg.lease_ms, cfg.republish_interval_ms, cfg.request_timeout_ms) == (3000, 1000, 5000)
    assert (cfg.log_level, cfg.insecure) == ("info", False)
    assert cfg.limits == Limits(1024, 1048576)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_shipped_node_configs(n: int) -> None:
    cfg = load_node_config(CONFIG_DIR / f"node{n}.toml")
    assert cfg.id == f"node{n}"
    assert cfg.coordinator == "tcp://127.0.0.1:7000"
    assert cfg.service_endpoint == f"tcp://127.0.0.1:7{n}01"
    assert cfg.write_endpoint == f"tcp://127.0.0.1:7{n}02"
    assert cfg.ack_endpoint == f"tcp://127.0.0.1:7{n}03"
    assert cfg.service_bind_endpoint == f"tcp://127.0.0.1:7{n}01"
    assert cfg.data_dir == REPO / "var" / f"node{n}"
    assert cfg.durability == "sync"
    assert (cfg.heartbeat_interval_ms, cfg.request_timeout_ms, cfg.catchup_page_items) == (500, 2000, 1000)
    assert cfg.index_max_keys == 1_000_000
    assert cfg.limits == Limits()


def _table_keys(path: Path) -> list[str]:
    """Every ``key = value`` line, to check the shipped files spell out every setting."""
    lines = path.read_text().splitlines()
    return [line.split("=")[0].strip() for line in lines if "=" in line and not line.startswith("#")]


def test_shipped_files_set_and_comment_every_key() -> None:
    from zcraq import config as module

    expected = {
        "coordinator.toml": set(module._COORDINATOR_KEYS) | set(module._CLUSTER_KEYS) | {"max_key_bytes",
                                                                                        "max_value_bytes"},
    }
    for n in (1, 2, 3):
        expected[f"node{n}.toml"] = set(module._NODE_KEYS) | {"max_key_bytes", "max_value_bytes"}
    for name, keys in expected.items():
        lines = (CONFIG_DIR / name).read_text().splitlines()
        assert set(_table_keys(CONFIG_DIR / name)) == keys
        for i, line in enumerate(lines):
            if "=" in line and not line.startswith("#"):
                assert lines[i - 1].startswith("# "), f"{name}:{i + 1}: key without a comment above it"


def test_shipped_nodes_do_not_collide() -> None:
    ports = [p for n in (1, 2, 3) for p in _ports(load_node_config(CONFIG_DIR / f"node{n}.toml"))]
    cfg = load_coordinator_config(CONFIG_DIR / "coordinator.toml")
    ports += [cfg.port, cfg.publish_port, cfg.metrics_port]
    assert len(ports) == len(set(ports)) and 0 not in ports


def _ports(cfg: NodeConfig) -> list[int]:
    return [cfg.service_port, cfg.write_port, cfg.ack_port, cfg.metrics_port]


# ---------------------------------------------------------------------------------------------
# Defaults and derived values


def test_node_defaults() -> None:
    cfg = node()
    assert cfg.bind_host == cfg.advertise_host == "127.0.0.1"
    assert cfg.durability == "sync"
    assert cfg.heartbeat_interval_ms == 500
    assert cfg.request_timeout_ms == 2000
    assert cfg.catchup_page_items == 1000
    assert cfg.index_max_keys == DEFAULT_MAX_KEYS == 1_000_000
    assert (cfg.log_level, cfg.log_format) == ("info", "text")
    assert cfg.insecure is False
    assert cfg.limits == Limits(max_key_bytes=1024, max_value_bytes=1048576)


def test_coordinator_defaults() -> None:
    cfg = coordinator()
    assert (cfg.bind_host, cfg.advertise_host) == ("127.0.0.1", "127.0.0.1")
    assert (cfg.port, cfg.publish_port) == (7000, 7001)
    assert (cfg.lease_ms, cfg.republish_interval_ms, cfg.request_timeout_ms) == (3000, 1000, 5000)
    assert (cfg.log_level, cfg.log_format, cfg.insecure) == ("info", "text", False)


def test_limits_table() -> None:
    cfg = node(limits={"max_key_bytes": 65535, "max_value_bytes": 64 * 1024 * 1024})
    assert cfg.limits == Limits(65535, 64 * 1024 * 1024)


def test_ipv6_endpoints_are_bracketed() -> None:
    cfg = node(bind_host="::1")
    assert cfg.service_endpoint == "tcp://[::1]:7101"
    assert cfg.ack_bind_endpoint == "tcp://[::1]:7103"
    assert cfg.uses_ipv6
    assert not node().uses_ipv6


def test_wildcard_bind_with_advertise_host() -> None:
    cfg = node(bind_host="*", advertise_host="db1.example.com", insecure=True)
    assert cfg.service_bind_endpoint == "tcp://*:7101"
    assert cfg.service_endpoint == "tcp://db1.example.com:7101"
    cfg = node(bind_host="::", advertise_host="2001:db8::5", insecure=True)
    assert cfg.write_bind_endpoint == "tcp://[::]:7102"
    assert cfg.write_endpoint == "tcp://[2001:db8::5]:7102"


def test_non_loopback_bind_with_insecure() -> None:
    cfg = coordinator(bind_host="192.0.2.10", insecure=True)
    assert cfg.endpoint == "tcp://192.0.2.10:7000"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.4.5", "::1", "localhost"])
def test_loopback_bind_needs_no_insecure(host: str) -> None:
    assert node(bind_host=host).bind_host == host


def test_relative_paths_resolve_against_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "etc" / "c.toml").write_text('[coordinator]\nstate_dir = "../var/c"\n')
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert load_coordinator_config("../etc/c.toml").state_dir == tmp_path / "var" / "c"
    assert node(path=str(tmp_path / "etc" / "n1.toml")).data_dir == tmp_path / "etc" / "data" / "n1"


def test_absolute_paths_are_kept() -> None:
    assert node(data_dir="/var/lib/zcraq/n1").data_dir == Path("/var/lib/zcraq/n1")


def test_default_coordinator_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZCRAQ_COORDINATOR", raising=False)
    assert default_coordinator_endpoint() == "tcp://127.0.0.1:7000"
    monkeypatch.setenv("ZCRAQ_COORDINATOR", "tcp://10.0.0.1:9000")
    assert default_coordinator_endpoint() == "tcp://10.0.0.1:9000"


def test_parse_endpoint() -> None:
    assert parse_endpoint("tcp://127.0.0.1:7000") == ("127.0.0.1", 7000)
    assert parse_endpoint("tcp://[::1]:7000") == ("::1", 7000)
    assert parse_endpoint("tcp://coord.example.com:7000") == ("coord.example.com", 7000)


def test_config_is_frozen() -> None:
    cfg = node()
    with pytest.raises(AttributeError):
        cfg.id = "other"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Errors: files


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    assert str(info.value) == f"{path}: file not found"
    assert (info.value.path, info.value.key, info.value.problem) == (str(path), None, "file not found")


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[node]\nid = "n1"\nservice_port 7101\n')
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid TOML: ")
    assert "line 3" in message
    assert info.value.key is None


def test_shipped_file_error_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "node1.toml"
    text = (CONFIG_DIR / "node1.toml").read_text().replace("service_port = 7101", 'service_port = "abc"')
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    assert str(info.value) == f'{path}: node.service_port: expected an integer from 1 to 65535, got "abc"'
    assert info.value.key == "node.service_port"


# ---------------------------------------------------------------------------------------------
# Errors: structure and types


def test_unknown_key_with_suggestion() -> None:
    data = without("service_port")
    data["node"]["sevice_port"] = 7101
    with pytest.raises(ConfigError) as info:
        node_config_from_dict(data, "etc/n1.toml")
    assert str(info.value) == 'etc/n1.toml: node.sevice_port: unknown key (did you mean "service_port"?)'


def test_unknown_key_without_suggestion() -> None:
    err = node_error(colour="blue")
    assert str(err) == "etc/n1.toml: node.colour: unknown key"


def test_unknown_limits_key() -> None:
    with pytest.raises(ConfigError) as info:
        node(limits={"max_value_byte": 10})
    assert str(info.value) == (
        'etc/n1.toml: limits.max_value_byte: unknown key (did you mean "max_value_bytes"?)'
    )


def test_unknown_table() -> None:
    data = copy.deepcopy(NODE) | {"limit": {"max_key_bytes": 10}}
    with pytest.raises(ConfigError) as info:
        node_config_from_dict(data, "etc/n1.toml")
    assert str(info.value) == "etc/n1.toml: limit: unknown table [limit] (did you mean [limits]?)"


def test_coordinator_table_in_node_file() -> None:
    with pytest.raises(ConfigError) as info:
        node_config_from_dict(COORDINATOR, "etc/n1.toml")
    assert info.value.key == "coordinator"
    assert "unknown table [coordinator]" in str(info.value)


def test_top_level_key_outside_table() -> None:
    with pytest.raises(ConfigError) as info:
        coordinator_config_from_dict({"state_dir": "x", "coordinator": {}}, "etc/c.toml")
    assert str(info.value).startswith("etc/c.toml: state_dir: unknown key outside any table")


def test_missing_table() -> None:
    with pytest.raises(ConfigError) as info:
        node_config_from_dict({}, "etc/n1.toml")
    assert str(info.value) == "etc/n1.toml: node: missing required table [node]"


@pytest.mark.parametrize("key", ["id", "coordinator", "service_port", "write_port", "ack_port", "data_dir"])
def test_missing_required_node_key(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        node_config_from_dict(without(key), "etc/n1.toml")
    assert str(info.value) == f"etc/n1.toml: node.{key}: missing required key"


def test_missing_state_dir() -> None:
    with pytest.raises(ConfigError) as info:
        coordinator_config_from_dict({"coordinator": {}}, "etc/c.toml")
    assert str(info.value) == "etc/c.toml: coordinator.state_dir: missing required key"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("service_port", "abc", 'expected an integer from 1 to 65535, got "abc"'),
        ("service_port", True, "expected an integer from 1 to 65535, got true"),
        ("service_port", 7101.0, "expected an integer from 1 to 65535, got 7101.0"),
        ("heartbeat_interval_ms", False, "expected an integer from 1 to 3600000, got false"),
        ("id", 5, "expected a string, got 5"),
        ("data_dir", ["a"], "expected a string, got an array"),
        ("insecure", "yes", 'expected true or false, got "yes"'),
        ("insecure", 1, "expected true or false, got 1"),
        ("durability", 1, 'expected one of "sync", "async", got 1'),
        ("index_max_keys", "1M", 'expected an integer from 0 to 100000000, got "1M"'),
        ("index_max_keys", 1e6, "expected an integer from 0 to 100000000, got 1000000.0"),
    ],
)
def test_wrong_type(key: str, value: Any, message: str) -> None:
    err = node_error(**{key: value})
    assert str(err) == f"etc/n1.toml: node.{key}: {message}"


def test_wrong_type_in_limits() -> None:
    with pytest.raises(ConfigError) as info:
        node(limits={"max_key_bytes": True})
    assert str(info.value) == (
        "etc/n1.toml: limits.max_key_bytes: expected an integer from 1 to 65535, got true"
    )


def test_table_of_wrong_type() -> None:
    with pytest.raises(ConfigError) as info:
        node_config_from_dict(copy.deepcopy(NODE) | {"limits": 5}, "etc/n1.toml")
    assert str(info.value) == "etc/n1.toml: limits: expected a table [limits], got 5"


def test_empty_string() -> None:
    assert str(node_error(data_dir="")) == "etc/n1.toml: node.data_dir: must not be empty"


# ---------------------------------------------------------------------------------------------
# Errors: values


@pytest.mark.parametrize("port", [0, -1, 65536, 100000])
def test_out_of_range_port(port: int) -> None:
    err = node_error(write_port=port)
    assert str(err) == f"etc/n1.toml: node.write_port: expected an integer from 1 to 65535, got {port}"


def test_out_of_range_coordinator_port() -> None:
    with pytest.raises(ConfigError) as info:
        coordinator(publish_port=70000)
    assert info.value.key == "coordinator.publish_port"


def test_duplicate_node_ports() -> None:
    err = node_error(ack_port=7101)
    assert str(err) == "etc/n1.toml: node.ack_port: port 7101 is already used by node.service_port"


def test_duplicate_coordinator_ports() -> None:
    with pytest.raises(ConfigError) as info:
        coordinator(publish_port=7000)
    assert str(info.value) == (
        "etc/c.toml: coordinator.publish_port: port 7000 is already used by coordinator.port"
    )


def test_metrics_port_is_off_unless_set_and_checked_like_the_others() -> None:
    assert node().metrics_port == 0 and coordinator().metrics_port == 0
    assert node(metrics_port=9101).metrics_port == 9101
    assert coordinator(metrics_port=9100).metrics_port == 9100
    assert str(node_error(metrics_port=7102)) == (
        "etc/n1.toml: node.metrics_port: port 7102 is already used by node.write_port")
    with pytest.raises(ConfigError) as info:
        coordinator(metrics_port=7001)
    assert str(info.value) == (
        "etc/c.toml: coordinator.metrics_port: port 7001 is already used by coordinator.publish_port")
    for bad in (-1, 65536, "9100", True):
        assert node_error(metrics_port=bad).key == "node.metrics_port"


@pytest.mark.parametrize("bad_id", ["", "a" * 65, "node 1", "node/1", "nöde"])
def test_bad_id(bad_id: str) -> None:
    err = node_error(id=bad_id)
    assert err.key == "node.id"
    assert str(err).startswith("etc/n1.toml: node.id: ")


def test_id_limits_accepted() -> None:
    assert node(id="a" * 64).id == "a" * 64
    assert node(id="Node_1.eu-west").id == "Node_1.eu-west"


@pytest.mark.parametrize(
    "endpoint",
    [
        "127.0.0.1:7000",
        "udp://127.0.0.1:7000",
        "tcp://127.0.0.1",
        "tcp://127.0.0.1:0",
        "tcp://127.0.0.1:99999",
        "tcp://:7000",
        "tcp://::1:7000",
        "tcp://[127.0.0.1]:7000",
        "tcp://*:7000",
        "tcp://0.0.0.0:7000",
        "tcp://bad_host!:7000",
        "tcp://127.0.0.1:7000/x",
    ],
)
def test_bad_coordinator_endpoint(endpoint: str) -> None:
    err = node_error(coordinator=endpoint)
    assert err.key == "node.coordinator"
    assert str(err).startswith("etc/n1.toml: node.coordinator: unusable endpoint ")


@pytest.mark.parametrize("wildcard", ["0.0.0.0", "::", "*", "0:0:0:0:0:0:0:0"])
def test_wildcard_bind_without_advertise_host(wildcard: str) -> None:
    err = node_error(bind_host=wildcard, insecure=True)
    assert err.key == "node.advertise_host"
    assert str(err).startswith("etc/n1.toml: node.advertise_host: missing required key")
    assert "wildcard" in err.problem


def test_wildcard_advertise_host() -> None:
    err = node_error(bind_host="0.0.0.0", advertise_host="0.0.0.0", insecure=True)
    assert err.key == "node.advertise_host"
    assert "wildcard" in err.problem


@pytest.mark.parametrize("host", ["0.0.0.0", "*", "::", "10.1.2.3", "2001:db8::1"])
def test_non_loopback_bind_without_insecure(host: str) -> None:
    err = node_error(bind_host=host, advertise_host="10.1.2.3")
    assert err.key == "node.bind_host"
    assert str(err).startswith("etc/n1.toml: node.bind_host: binding ")
    assert "insecure = true" in err.problem
    assert "not encrypted" in err.problem or "neither encrypted" in err.problem


def test_non_loopback_coordinator_bind_without_insecure() -> None:
    with pytest.raises(ConfigError) as info:
        coordinator(bind_host="192.0.2.10")
    assert info.value.key == "coordinator.bind_host"
    assert "insecure = true in [coordinator]" in info.value.problem


@pytest.mark.parametrize("host", ["db1.example.com", "[::1]", "127.0.0.1:7000", "not an address"])
def test_unusable_bind_host(host: str) -> None:
    err = node_error(bind_host=host)
    assert err.key == "node.bind_host"
    assert err.problem.startswith("unusable address")


@pytest.mark.parametrize("host", ["bad host", "-x.example.com", "[::1]", "a..b"])
def test_unusable_advertise_host(host: str) -> None:
    err = node_error(advertise_host=host)
    assert err.key == "node.advertise_host"
    assert err.problem.startswith("unusable address")


def test_bad_durability() -> None:
    err = node_error(durability="fast")
    assert str(err) == 'etc/n1.toml: node.durability: expected one of "sync", "async", got "fast"'


@pytest.mark.parametrize("level", ["verbose", "INFO", "warn"])
def test_bad_log_level(level: str) -> None:
    err = node_error(log_level=level)
    assert str(err) == (
        f'etc/n1.toml: node.log_level: expected one of "debug", "info", "warning", "error", got "{level}"'
    )


def test_bad_coordinator_log_level() -> None:
    with pytest.raises(ConfigError) as info:
        coordinator(log_level="trace")
    assert info.value.key == "coordinator.log_level"


@pytest.mark.parametrize("log_format", ["xml", "JSON", ""])
def test_bad_log_format(log_format: str) -> None:
    err = node_error(log_format=log_format)
    assert str(err) == f'etc/n1.toml: node.log_format: expected one of "text", "json", got "{log_format}"'


def test_bad_coordinator_log_format() -> None:
    with pytest.raises(ConfigError) as info:
        coordinator(log_format="xml")
    assert info.value.key == "coordinator.log_format"


def test_log_format_json() -> None:
    assert node(log_format="json").log_format == coordinator(log_format="json").log_format == "json"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("heartbeat_interval_ms", 0),
        ("request_timeout_ms", -5),
        ("catchup_page_items", 0),
        ("catchup_page_items", 100001),
        ("index_max_keys", -1),
        ("index_max_keys", 100_000_001),
    ],
)
def test_out_of_range_node_values(key: str, value: int) -> None:
    err = node_error(**{key: value})
    assert err.key == f"node.{key}"
    assert err.problem.startswith("expected an integer from ")


@pytest.mark.parametrize(
    ("key", "value"), [("lease_ms", 99), ("republish_interval_ms", 0), ("request_timeout_ms", 0)]
)
def test_out_of_range_coordinator_values(key: str, value: int) -> None:
    with pytest.raises(ConfigError) as info:
        coordinator(**{key: value})
    assert info.value.key == f"coordinator.{key}"


def test_index_max_keys_takes_its_whole_range() -> None:
    assert [node(index_max_keys=n).index_max_keys for n in (0, 2, 100_000_000)] == [0, 2, 100_000_000]


def test_lease_minimum_accepted() -> None:
    assert coordinator(lease_ms=100).lease_ms == 100


@pytest.mark.parametrize(
    ("limits", "key"),
    [
        ({"max_key_bytes": 0}, "limits.max_key_bytes"),
        ({"max_key_bytes": 65536}, "limits.max_key_bytes"),
        ({"max_value_bytes": 0}, "limits.max_value_bytes"),
        ({"max_value_bytes": 64 * 1024 * 1024 + 1}, "limits.max_value_bytes"),
    ],
)
def test_out_of_range_limits(limits: dict[str, int], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        node(limits=limits)
    assert info.value.key == key


# ---------------------------------------------------------------------------------------------
# A partitioned cluster: [cluster] of the coordinator, zone of a node


def test_cluster_table_is_optional_and_means_one_chain() -> None:
    cfg = coordinator()
    assert (cfg.cluster.partitions, cfg.cluster.replication, cfg.cluster.max_moves) == (1, 3, 2)
    assert cfg.cluster.formation_grace_ms == 5000 and not cfg.cluster.partitioned


def test_cluster_table() -> None:
    data = copy.deepcopy(COORDINATOR)
    data["cluster"] = {"partitions": 64, "replication": 5, "max_moves": 4, "formation_grace_ms": 0}
    cluster = coordinator_config_from_dict(data, "etc/c.toml").cluster
    assert (cluster.partitions, cluster.replication, cluster.max_moves, cluster.formation_grace_ms) == (64, 5, 4, 0)
    assert cluster.partitioned


@pytest.mark.parametrize("table, message", [
    ({"partitions": 0}, "cluster.partitions: expected an integer from 1 to 4096, got 0"),
    ({"partitions": 4097}, "cluster.partitions: expected an integer from 1 to 4096, got 4097"),
    ({"partitions": "8"}, 'cluster.partitions: expected an integer from 1 to 4096, got "8"'),
    ({"replication": 0}, "cluster.replication: expected an integer from 1 to 16, got 0"),
    ({"replication": 17}, "cluster.replication: expected an integer from 1 to 16, got 17"),
    ({"max_moves": 0}, "cluster.max_moves: expected an integer from 1 to"),
    ({"formation_grace_ms": -1}, "cluster.formation_grace_ms: expected an integer from 0 to"),
    ({"partiton": 8}, 'cluster.partiton: unknown key (did you mean "partitions"?)'),
])
def test_bad_cluster_values(table: dict[str, Any], message: str) -> None:
    data = copy.deepcopy(COORDINATOR)
    data["cluster"] = table
    with pytest.raises(ConfigError) as info:
        coordinator_config_from_dict(data, "etc/c.toml")
    assert message in str(info.value) and str(info.value).startswith("etc/c.toml: ")


def test_cluster_table_of_wrong_type() -> None:
    data = {**copy.deepcopy(COORDINATOR), "cluster": 4}
    with pytest.raises(ConfigError, match=r"cluster: expected a table \[cluster\], got 4"):
        coordinator_config_from_dict(data, "etc/c.toml")


def test_node_zone() -> None:
    assert node().zone == ""
    assert node(zone="rack-1").zone == "rack-1"
    assert node(zone="z" * 64).zone == "z" * 64
    assert "node.zone: expected at most 64 characters" in str(node_error(zone="z" * 65))
    assert "node.zone: expected a string" in str(node_error(zone=3))
    assert node(zone="").zone == ""  # the shipped files spell the default out
