"""The ``zcraq`` command: run a node or the coordinator, use the chain, check a history.

Exit codes: 0 success; 1 failed; 2 usage or config error. ``zcraq client`` (zcraq/cli_client.py)
has a table of its own.
"""

from __future__ import annotations

import sys

import click

from zcraq.cli_batches import COMMANDS as BATCH_COMMANDS
from zcraq.cli_scan import scan
from zcraq.cli_watch import watch
from zcraq.cli_admin import admin
from zcraq.cli_client import client
from zcraq.config import ConfigError, load_coordinator_config, load_node_config
from zcraq.logs import setup_logging

EXIT_FAILED = 1
EXIT_USAGE = 2


def _config_failure(error: Exception) -> None:
    click.echo(f"zcraq: {error}", err=True)
    sys.exit(EXIT_USAGE)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="zcraq")
def main() -> None:
    """zcraq: a strongly consistent replicated key-value store (CRAQ on ZeroMQ and LevelDB)."""


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Node config file, e.g. config/node1.toml.")
def node(config_path: str) -> None:
    """Run a chain node until SIGINT or SIGTERM (on SIGTERM it leaves the chain cleanly)."""
    from zcraq.node import run_node
    from zcraq.store import StoreError

    try:
        config = load_node_config(config_path)
        setup_logging(config.id, config.log_level, config.log_format)
        run_node(config)
    except (ConfigError, StoreError) as error:
        _config_failure(error)


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Coordinator config file, e.g. config/coordinator.toml.")
def coordinator(config_path: str) -> None:
    """Run the coordinator until SIGINT or SIGTERM."""
    from zcraq.coordinator import StateError, run_coordinator

    try:
        config = load_coordinator_config(config_path)
        # Several coordinators (coordinator1.toml, ...) are told apart by their files' names.
        setup_logging(config.path.stem if config.engine else "coordinator", config.log_level, config.log_format)
        run_coordinator(config)
    except (ConfigError, StateError) as error:
        _config_failure(error)


@main.command()
@click.option("--config-dir", default="config", show_default=True, type=click.Path(file_okay=False),
              help="Directory holding coordinator.toml and node*.toml.")
def run(config_dir: str) -> None:
    """Run a local coordinator and every node*.toml in the foreground; Ctrl-C stops them all.

    A process that dies is named and started again after a back-off (1 s, doubling to 30 s); the
    others keep running. Exit 0 when stopped by Ctrl-C or SIGTERM, 1 when a process could not be
    kept running (5 failed starts, or a config it refuses), 2 when the config directory is unusable.
    """
    from zcraq.local import run_local

    sys.exit(run_local(config_dir))


@main.command()
@click.argument("names", nargs=-1, required=True)
@click.option("-d", "--dir", "directory", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Directory to write NAME.key (public) and NAME.key_secret (secret, mode 0600) into.")
def keygen(names: tuple[str, ...], directory: str) -> None:
    """Create a CURVE key pair for each NAME, in ZeroMQ's certificate format.

    Give each process its NAME.key_secret ([security] certificate) and put the public NAME.key
    into the allow-list directory of its role (nodes, clients or admins) on every machine."""
    from pathlib import Path

    from zcraq.security import KeyFileError, create_certificate

    for name in names:
        try:
            secret = create_certificate(Path(directory), name)
        except KeyFileError as error:
            _config_failure(error)
        click.echo(f"{secret.with_suffix('.key')} (public)  {secret} (secret)")


@main.command()
@click.argument("history", type=click.Path(exists=True, dir_okay=False))
def verify(history: str) -> None:
    """Check a JSON Lines history for linearizability (exit 0 yes, 1 no, 2 malformed)."""
    from zcraq.checker.cli import main as check_main

    sys.exit(check_main([history]))


@main.command()
@click.option("--duration", default=60.0, show_default=True, type=click.FloatRange(min=1.0),
              help="Seconds of workload under faults (healing, final reads and checking come after).")
@click.option("--nemesis", "nemesis_kinds", default="all", show_default=True, metavar="KINDS",
              help="Comma list of kill, pause, partition, coordinator (and with --engine: leader, etcd); or all, "
                   "or none.")
@click.option("--clients", default=5, show_default=True, type=click.IntRange(min=1),
              help="Concurrent client threads (Jepsen processes).")
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 20), help="Chain nodes.")
@click.option("--partitions", default=1, show_default=True, type=click.IntRange(1, 4096),
              help="Partitions of the keyspace, each its own chain of 3 placed over the nodes (not the network "
                   "partitions of the nemesis).")
@click.option("--seed", default=None, type=int, help="Seed of the workload and the fault schedule [default: random].")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Empty or new directory for history.jsonl, nemesis.jsonl, summary.json, verdict.txt, "
                   "logs [default: a new directory under the system temp dir].")
@click.option("--unsafe", default="", metavar="FAULTS",
              help="Deliberate bugs to switch on in the nodes (ZCRAQ_UNSAFE_TEST_FAULTS), e.g. dirty_read_local.")
@click.option("--keys", default=5, show_default=True, type=click.IntRange(min=1), help="Hot keys k0..kN-1.")
@click.option("--read-ratio", default=0.5, show_default=True, type=click.FloatRange(0.0, 0.9),
              help="Share of reads; deletes are a tenth, conditional writes --cas-ratio, writes the rest.")
@click.option("--cas-ratio", default=0.2, show_default=True, type=click.FloatRange(0.0, 0.9),
              help="Share of conditional writes (if_version: the version the client last read of the key).")
@click.option("--think-ms", default=0.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Each client waits up to this long between operations.")
@click.option("--network", default="auto", show_default=True, type=click.Choice(["auto", "netns", "loopback"]),
              help="netns: each process in its own network namespace (needed for partitions); auto: netns "
                   "when partitions are wanted.")
@click.option("--durability", default="sync", show_default=True, type=click.Choice(["sync", "async"]),
              help="The nodes' durability setting.")
@click.option("--lease-ms", default=2000, show_default=True, type=click.IntRange(min=100), help="Coordinator lease.")
@click.option("--heartbeat-ms", default=200, show_default=True, type=click.IntRange(min=10), help="Node heartbeat.")
@click.option("--client-timeout", default=3.0, show_default=True, type=click.FloatRange(min=0.5),
              help="Seconds each client operation may take, retries included.")
@click.option("--converge-timeout", default=90.0, show_default=True, type=click.FloatRange(min=1.0),
              help="Seconds the healed chain may take to have every node serving.")
@click.option("--engine", is_flag=True,
              help="Three coordinators keeping their state in a local 3-member etcd (over loopback).")
def chaos(duration: float, nemesis_kinds: str, clients: int, nodes: int, partitions: int, seed: int | None,
          out_dir: str | None,
          unsafe: str, keys: int, read_ratio: float, cas_ratio: float, think_ms: float, network: str, durability: str,
          lease_ms: int, heartbeat_ms: int, client_timeout: float, converge_timeout: float, engine: bool) -> None:
    """Jepsen-style test against real processes: a workload under faults, then the checker.

    Exit 0 when the history is linearizable, no acknowledged write was lost and the replicas agree;
    1 on any violation (or when the run could not complete); 2 on usage errors.
    """
    import random
    import signal
    import tempfile
    from pathlib import Path

    from zcraq.chaos import ChaosOptions, UsageError, parse_nemesis, run_chaos

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    try:
        kinds, note = parse_nemesis(nemesis_kinds, engine)
    except UsageError as error:
        click.echo(f"zcraq chaos: {error}", err=True)
        sys.exit(EXIT_USAGE)
    if note:
        click.echo(f"zcraq chaos: {note}", err=True)
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="zcraq-chaos-"))
    options = ChaosOptions(
        out=out, duration=duration, nemesis=kinds, clients=clients, nodes=nodes, partitions=partitions,
        seed=random.randrange(1 << 31) if seed is None else seed, unsafe=unsafe, keys=keys, network=network,
        lease_ms=lease_ms, heartbeat_ms=heartbeat_ms, client_timeout=client_timeout,
        converge_timeout=converge_timeout, durability=durability, think_ms=think_ms, read_ratio=read_ratio,
        cas_ratio=cas_ratio, engine=engine)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        report = run_chaos(options, echo=click.echo)
    except UsageError as error:
        click.echo(f"zcraq chaos: {error}", err=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        click.echo("zcraq chaos: interrupted; processes and namespaces were cleaned up", err=True)
        sys.exit(EXIT_FAILED)
    sys.exit(report.exit_code)


for batch_command in BATCH_COMMANDS:
    client.add_command(batch_command)
client.add_command(scan)
client.add_command(watch)
main.add_command(client)
main.add_command(admin)

if __name__ == "__main__":
    main()
