"""The client's decisions (zcraq/clientcore.py) driven step by step, without sockets: which
endpoint each request goes to, what is retried, and what a missing answer means."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from zcraq import clientcore
from zcraq.clientcore import Answer, Call, ClientState, Pause, Step
from zcraq.errors import KeyNotFound, Timeout, TooLarge, Unavailable, WriteOutcomeUnknown
from zcraq.messages import Error, Limits, Ok, Read, TopologyRequest, Write
from zcraq.topology import Member, Topology

pytestmark = pytest.mark.timeout(30)

COORDINATOR = "tcp://127.0.0.1:7000"


def member(n: int) -> Member:
    return Member(f"node{n}", f"tcp://127.0.0.1:710{n}", f"tcp://127.0.0.1:720{n}", f"tcp://127.0.0.1:730{n}")


CHAIN = Topology(epoch=1, members=(member(1), member(2), member(3)), learner=None)
AFTER_FAILOVER = Topology(epoch=2, members=(member(2), member(3)), learner=None)


class Script:
    """Answers each Call with the next outcome its endpoint's script gives; records every step."""

    def __init__(self, answer: Callable[[Call], Answer | Timeout]) -> None:
        self.answer = answer
        self.steps: list[Step] = []

    def __call__(self, step: Step) -> Answer | Timeout | None:
        self.steps.append(step)
        if isinstance(step, Pause):
            return None
        return self.answer(step)

    def calls(self) -> list[Call]:
        return [s for s in self.steps if isinstance(s, Call)]


def topology_reply(call: Call, topology: Topology = CHAIN) -> Answer:
    return Ok(call.request.id, topology=topology, limits=Limits(max_key_bytes=8, max_value_bytes=16)), []


def fresh_state(timeout: float = 2.0) -> ClientState:
    return ClientState(COORDINATOR, timeout)


def test_a_write_goes_to_the_head_and_follows_not_head():
    state = fresh_state()
    heads = iter([CHAIN, AFTER_FAILOVER])

    def answer(call: Call) -> Answer | Timeout:
        if isinstance(call.request, TopologyRequest):
            return topology_reply(call, next(heads))
        if call.endpoint == member(1).service:
            return Error(call.request.id, "not_head", "not the head", head=member(2).service), []
        return Ok(call.request.id, version=7), []

    script = Script(answer)
    build, size = clientcore.write_request("k", "v")
    ok = clientcore.run_blocking(clientcore.write(state, "k", build, size, state.deadline()), script)
    assert ok.version == 7
    sent = [(c.endpoint, type(c.request).__name__) for c in script.calls()]
    assert sent == [(COORDINATOR, "TopologyRequest"), (member(1).service, "Write"),
                    (COORDINATOR, "TopologyRequest"), (member(2).service, "Write")]
    writes = [c for c in script.calls() if isinstance(c.request, Write)]
    assert all(c.connect_first for c in writes), "a write waits for its connection's handshake"
    assert writes[0].request.id != writes[1].request.id
    assert [c.shared for c in script.calls() if isinstance(c.request, TopologyRequest)] == [True, True]


def test_a_write_whose_request_was_delivered_is_unknown_and_never_resent():
    state = fresh_state()

    def answer(call: Call) -> Answer | Timeout:
        if isinstance(call.request, TopologyRequest):
            return topology_reply(call)
        return Timeout("no answer", delivered=True)

    script = Script(answer)
    with pytest.raises(WriteOutcomeUnknown):
        clientcore.run_blocking(clientcore.write(state, "k", *clientcore.write_request("k", "v"), state.deadline()),
                                script)
    assert sum(isinstance(c.request, Write) for c in script.calls()) == 1


def test_a_write_that_never_left_is_retried_until_the_deadline_then_unavailable():
    state = fresh_state(timeout=0.3)

    def answer(call: Call) -> Answer | Timeout:
        if isinstance(call.request, TopologyRequest):
            return topology_reply(call)
        return Timeout("no connection", delivered=False)

    script = Script(answer)
    with pytest.raises(Unavailable) as raised:
        clientcore.run_blocking(clientcore.write(state, "k", *clientcore.write_request("k", "v"), state.deadline()),
                                _sleeping(script))
    assert not isinstance(raised.value, WriteOutcomeUnknown)
    assert sum(isinstance(c.request, Write) for c in script.calls()) >= 2


def test_a_refused_write_is_not_resent_too_late_to_hear_the_refusal():
    """The head refuses (``unavailable``) after 20 ms each time. A resend sent with less than that
    left would meet the deadline unanswered; the write must end in the refusal, not in an unknown
    outcome."""
    for _ in range(5):
        state = fresh_state(timeout=0.3)

        def answer(call: Call) -> Answer | Timeout:
            if isinstance(call.request, TopologyRequest):
                return topology_reply(call)
            if time.monotonic() + 0.02 > call.deadline:
                return Timeout("no answer", delivered=True)
            time.sleep(0.02)
            return Error(call.request.id, "unavailable", "the chain is reconfiguring"), []

        script = Script(answer)
        with pytest.raises(Unavailable) as raised:
            clientcore.run_blocking(clientcore.write(state, "k", *clientcore.write_request("k", "v"),
                                                     state.deadline()), _sleeping(script))
        assert not isinstance(raised.value, WriteOutcomeUnknown)
        assert sum(isinstance(c.request, Write) for c in script.calls()) >= 2


def test_sizes_are_refused_before_anything_but_the_topology_is_sent():
    state = fresh_state()
    script = Script(topology_reply)
    with pytest.raises(TooLarge, match="value is larger than 16 bytes"):
        clientcore.run_blocking(clientcore.write(state, "k", *clientcore.write_request("k", b"x" * 17),
                                                 state.deadline()), script)
    with pytest.raises(TooLarge, match="key is longer than 8 bytes"):
        clientcore.run_blocking(clientcore.read(state, "k" * 9, None, "strong", state.deadline()), script)
    assert all(isinstance(c.request, TopologyRequest) for c in script.calls())


def test_reads_spread_over_the_members_and_skip_one_that_failed():
    state = fresh_state()
    dead = member(2).service

    def answer(call: Call) -> Answer | Timeout:
        if isinstance(call.request, TopologyRequest):
            return topology_reply(call)
        if call.endpoint == dead:
            return Timeout("no answer")
        return Ok(call.request.id, version=3), [b"value"]

    script = Script(answer)
    for _ in range(12):
        result = clientcore.run_blocking(clientcore.read(state, "k", None, "strong", state.deadline()), script)
        assert result == (b"value", 3)
    reads = [c.endpoint for c in script.calls() if isinstance(c.request, Read)]
    assert reads.count(dead) == 1, "a node that timed out is avoided for a while"
    assert {member(1).service, member(3).service} <= set(reads)


def test_a_read_of_a_missing_key_is_not_found_and_not_retried():
    state = fresh_state()

    def answer(call: Call) -> Answer | Timeout:
        if isinstance(call.request, TopologyRequest):
            return topology_reply(call)
        return Error(call.request.id, "not_found", "no such key"), []

    script = Script(answer)
    with pytest.raises(KeyNotFound):
        clientcore.run_blocking(clientcore.read(state, "k", "node3", "eventual", state.deadline()), script)
    reads = [c for c in script.calls() if isinstance(c.request, Read)]
    assert [(c.endpoint, c.request.mode) for c in reads] == [(member(3).service, "eventual")]


def _sleeping(script: Script) -> Callable[[Step], Answer | Timeout | None]:
    """``script``, with each Pause really waited (so a plan's deadline passes)."""
    def perform(step: Step) -> Answer | Timeout | None:
        if isinstance(step, Pause):
            time.sleep(step.seconds())
        return script(step)
    return perform
