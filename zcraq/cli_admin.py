"""``zcraq admin``: what an administrator asks of the coordinator: draining a node of a
partitioned cluster (placement moves every replica off it), or undoing that.

The options are those of ``zcraq client`` (--config, -c/--coordinator, -t/--timeout, --json, before
or after the subcommand), and so is the way to the coordinator: the option, else the config
file's, else $ZCRAQ_COORDINATOR, else tcp://127.0.0.1:7000. A secured cluster wants an
administrator's keys in the config file. Exit codes are those of ``zcraq client``.
"""

from __future__ import annotations

import click

from zcraq import clientcore, exit_codes
from zcraq.cli_client import Outcome, Settings, run_action, shared_options
from zcraq.client import ZClient
from zcraq.clientcore import ClientState, Plan
from zcraq.errors import Timeout
from zcraq.messages import MAX_NODE_ID_CHARS, Drain


@click.group(help=f"""Administer a cluster (a secured one needs an administrator's keys: --config).

{exit_codes.help_table()}
""")
@shared_options
def admin() -> None:
    pass


def _node_argument(_ctx: click.Context, _param: click.Parameter, node_id: str) -> str:
    if not 0 < len(node_id) <= MAX_NODE_ID_CHARS:
        raise click.BadParameter(f"must be 1 to {MAX_NODE_ID_CHARS} characters")
    return node_id


def ask_drain(state: ClientState, node_id: str, draining: bool) -> Plan[None]:
    """Ask the coordinator to mark ``node_id`` draining (or serving again); raises its refusal."""
    outcome = yield from clientcore.ask_coordinator(state, lambda i: Drain(node_id, draining, id=i), state.deadline())
    if isinstance(outcome, Timeout):
        raise outcome
    clientcore.ok(outcome[0])


@admin.command("drain")
@click.argument("node_id", metavar="NODE", callback=_node_argument)
@click.option("--undo", is_flag=True, help="Mark NODE serving again: placement may put replicas on it.")
@shared_options
@click.pass_obj
def drain(settings: Settings, node_id: str, undo: bool) -> None:
    """Move every replica off NODE (a node of a partitioned cluster), e.g. before taking it away.

    The coordinator marks NODE draining at once; placement then moves its replicas, a few at a
    time ([cluster] max_moves), and puts no new ones on it. The partition table (the coordinator's
    answer to topology) shows how far that is. JSON: {"node": NODE, "draining": true or false}.
    """
    draining = not undo

    def action(zclient: ZClient) -> Outcome:
        # The client's own request machinery: CURVE, timeouts and errors as for any request.
        zclient._run(ask_drain(zclient._state, node_id, draining))  # noqa: SLF001
        text = (f"{node_id} draining: its replicas move to other nodes\n" if draining
                else f"{node_id} serving again: placement may put replicas on it\n")
        return Outcome({"node": node_id, "draining": draining}, text.encode())

    run_action(settings, action)


__all__ = ["admin", "ask_drain"]
