"""Finding the leading coordinator among several configured, without sockets: the node's
CoordinatorFinder (zcraq/coordinator_finder.py) and the client's ClientState.move_on and
ask_coordinator plan (zcraq/clientcore.py), driven step by step."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from zcraq import clientcore
from zcraq.clientcore import COORDINATOR_ATTEMPT, Answer, Call, ClientState, Pause, Plan, Step
from zcraq.coordinator_finder import SUSPECT_FOR, CoordinatorFinder
from zcraq.errors import Timeout, Unavailable
from zcraq.messages import Error, Malformed, Ok, StatusRequest, TopologyRequest, Write
from zcraq.topology import Member, Topology

pytestmark = pytest.mark.timeout(30)

A = "tcp://127.0.0.1:7000"
B = "tcp://127.0.0.1:7010"
C = "tcp://127.0.0.1:7020"
ELSEWHERE = "tcp://10.9.9.9:7000"  # a leader no config lists
THREE = (A, B, C)
SILENCE = 1.0


def not_leader(leader: str | None, request_id: int = 1) -> Error:
    return Error(request_id, "not_leader", "a standby", leader=leader)


def finder(*endpoints: str) -> CoordinatorFinder:
    return CoordinatorFinder(endpoints or THREE, SILENCE)


# ---------------------------------------------------------------------------------- CoordinatorFinder


def test_the_finder_needs_an_endpoint() -> None:
    with pytest.raises(ValueError):
        CoordinatorFinder((), SILENCE)


def test_the_finder_starts_with_the_first_endpoint() -> None:
    assert finder().current == A
    assert finder(C, A).current == C


def test_one_endpoint_never_moves() -> None:
    f = finder(A)
    assert f.answered(not_leader(None), 0.0) is None
    assert f.answered(not_leader(ELSEWHERE), 0.1) is None
    assert f.answered(not_leader(A), 0.2) is None
    f.sent(1.0)
    assert f.check(1.0 + 100 * SILENCE) is None
    assert f.current == A


def test_not_leader_naming_a_configured_leader_moves_there() -> None:
    f = finder()
    assert f.answered(not_leader(C), 0.0) == C
    assert f.current == C
    assert f.answered(not_leader(B), 0.1) == B
    assert f.current == B


def test_not_leader_naming_an_unlisted_endpoint_moves_to_the_next_configured_one() -> None:
    f = finder()
    assert f.answered(not_leader(ELSEWHERE), 0.0) == B
    assert f.current == B
    assert f.answered(not_leader(ELSEWHERE), 0.1) == C
    assert f.answered(not_leader(ELSEWHERE), 0.2) == A
    assert f.current != ELSEWHERE


def test_not_leader_naming_no_leader_moves_to_the_next_round_the_list() -> None:
    f = finder()
    moves = [f.answered(not_leader(None), 0.1 * i) for i in range(4)]
    assert moves == [B, C, A, B]
    assert f.current == B


def test_not_leader_naming_itself_moves_to_the_next() -> None:
    f = finder()
    assert f.answered(not_leader(A), 0.0) == B


def test_two_endpoints_alternate_on_not_leader_without_a_leader() -> None:
    f = finder(A, B)
    assert [f.answered(not_leader(None), float(i)) for i in range(3)] == [B, A, B]


@pytest.mark.parametrize("reply", [
    Ok(1),
    Ok(1, version=3),
    Error(1, "unavailable", "no chain yet"),
    Error(1, "not_head", "not the head", head=B),
    Error(1, "busy", "try later", leader=C),  # a leader named outside a not_leader is no reason to move
    Malformed("bad_request", "not msgpack", 1),
], ids=["ok", "ok-version", "unavailable", "not_head", "busy", "malformed"])
def test_an_ordinary_reply_stays(reply: Any) -> None:
    f = finder()
    f.sent(0.0)
    assert f.answered(reply, 0.1) is None
    assert f.current == A
    assert f.check(0.1 + 10 * SILENCE) is None, "the answer stopped the silence clock"


def test_a_request_unanswered_for_silence_seconds_moves_on() -> None:
    f = finder()
    f.sent(10.0)
    assert f.check(10.0) is None
    assert f.check(10.0 + SILENCE * 0.99) is None
    assert f.check(10.0 + SILENCE) == B
    assert f.current == B


def test_the_oldest_unanswered_request_counts() -> None:
    f = finder()
    f.sent(0.0)
    f.sent(0.9 * SILENCE)  # a later one does not restart the clock
    assert f.check(SILENCE) == B


def test_no_move_when_nothing_was_sent() -> None:
    f = finder()
    assert f.check(0.0) is None
    assert f.check(1000 * SILENCE) is None
    assert f.current == A


def test_no_move_when_answered_in_time() -> None:
    f = finder()
    f.sent(0.0)
    assert f.answered(Ok(1), 0.5 * SILENCE) is None
    assert f.check(5 * SILENCE) is None
    f.sent(6 * SILENCE)
    assert f.check(6.5 * SILENCE) is None
    assert f.current == A


def test_after_a_move_the_silence_clock_restarts() -> None:
    f = finder()
    f.sent(0.0)
    assert f.check(SILENCE) == B
    assert f.check(SILENCE + 0.01) is None, "nothing was sent to B yet"
    assert f.check(10 * SILENCE) is None
    f.sent(10 * SILENCE)
    assert f.check(10.5 * SILENCE) is None
    assert f.check(11 * SILENCE) == C
    f.sent(12 * SILENCE)
    assert f.check(13 * SILENCE) == A, "round the list"


def test_a_move_on_not_leader_restarts_the_silence_clock() -> None:
    f = finder()
    f.sent(0.0)
    assert f.answered(not_leader(C), 0.2) == C
    assert f.check(5 * SILENCE) is None


def test_a_silent_leader_is_not_gone_back_to_on_a_standbys_word_for_a_while() -> None:
    f = finder()
    f.sent(0.0)
    assert f.check(SILENCE) == B  # A went silent
    assert f.answered(not_leader(A), SILENCE + 0.1) == C, "B still names the dead leader: try the next one"
    later = SILENCE + SUSPECT_FOR
    assert f.answered(not_leader(A), later) == A, "after SUSPECT_FOR the word is taken again"


def test_a_silent_coordinator_that_answers_again_is_trusted_again() -> None:
    f = finder(A, B, C)
    f.sent(0.0)
    assert f.check(SILENCE) == B  # A found silent
    assert f.answered(not_leader(None), SILENCE + 0.1) == C
    assert f.answered(not_leader(None), SILENCE + 0.2) == A
    assert f.answered(Ok(1), SILENCE + 0.3) is None  # A answers: no longer suspected
    assert f.answered(not_leader(None), SILENCE + 0.4) == B
    assert f.answered(not_leader(A), SILENCE + 0.5) == A, "B's word for A is taken again"


def test_a_coordinator_found_silent_later_is_suspected_from_then() -> None:
    f = finder(A, B, C)
    f.sent(0.0)
    assert f.check(SILENCE) == B  # A found silent
    f.sent(SILENCE)
    assert f.check(2 * SILENCE) == C  # B found silent too
    assert f.answered(not_leader(B), 2 * SILENCE + 0.1) == A, "C's word for B is not taken"


# ---------------------------------------------------------------------------------- ClientState.move_on


def test_move_on_follows_a_listed_leader_else_the_next() -> None:
    state = ClientState(A, 2.0, coordinators=THREE)
    state.move_on(A, not_leader(C))
    assert state.coordinator == C
    state.move_on(C, not_leader(ELSEWHERE))
    assert state.coordinator == A, "an unlisted leader is never asked: the next one, round the list"
    state.move_on(A, None)
    assert state.coordinator == B
    state.move_on(B, not_leader(B))
    assert state.coordinator == C


def test_move_on_ignores_an_endpoint_no_longer_asked() -> None:
    state = ClientState(A, 2.0, coordinators=THREE)
    state.move_on(A, not_leader(C))
    state.move_on(A, None)  # a late failure of the one asked before
    assert state.coordinator == C


def test_move_on_with_one_coordinator_stays() -> None:
    state = ClientState(A, 2.0)
    assert state.coordinators == (A,)
    state.move_on(A, not_leader(B))
    state.move_on(A, None)
    assert state.coordinator == A


# ---------------------------------------------------------------------------------- ask_coordinator


class Driven:
    """A plan stepped by hand: ``step`` is the step it waits on (None once it ended with ``result``);
    ``steps`` every step it took, with the monotonic time it was received."""

    def __init__(self, plan: Plan[Any]) -> None:
        self.plan = plan
        self.result: Any = None
        self.steps: list[tuple[Step, float, float]] = []
        self.step: Step | None = None
        self._advance(None)

    def _advance(self, outcome: Answer | Timeout | None) -> None:
        before = time.monotonic()
        try:
            step = self.plan.send(outcome)
        except StopIteration as done:
            self.step, self.result = None, done.value
            return
        self.steps.append((step, before, time.monotonic()))
        self.step = step

    def call(self) -> Call:
        assert isinstance(self.step, Call), f"expected a Call, got {self.step!r}"
        return self.step

    def answer(self, outcome: Answer | Timeout) -> None:
        self.call()
        self._advance(outcome)

    def resume(self) -> None:
        assert isinstance(self.step, Pause), f"expected a Pause, got {self.step!r}"
        self._advance(None)

    def calls(self) -> list[Call]:
        return [s for s, _, _ in self.steps if isinstance(s, Call)]


def status_request(request_id: int) -> StatusRequest:
    return StatusRequest(id=request_id)


def ask(state: ClientState, deadline: float | None = None, shared: bool = False) -> Driven:
    return Driven(clientcore.ask_coordinator(state, status_request, deadline or state.deadline(), shared=shared))


def refusal(call: Call, leader: str | None) -> Answer:
    return not_leader(leader, call.request.id), []


def test_one_coordinator_returns_a_timeout_as_is() -> None:
    state = ClientState(A, 2.0)
    deadline = time.monotonic() + 2.0
    plan = ask(state, deadline)
    first = plan.call()
    assert (first.endpoint, first.deadline) == (A, deadline), "one coordinator gets the whole call"
    timeout = Timeout("no answer")
    plan.answer(timeout)
    assert plan.step is None
    assert plan.result is timeout
    assert state.coordinator == A


def test_one_coordinator_returns_not_leader_as_is() -> None:
    state = ClientState(A, 2.0)
    plan = ask(state)
    answer = refusal(plan.call(), B)
    plan.answer(answer)
    assert plan.step is None and plan.result == answer
    assert state.coordinator == A


def test_three_coordinators_follow_not_leader_then_timeouts_until_an_ok() -> None:
    state = ClientState(A, 2.0, coordinators=THREE)
    plan = ask(state, time.monotonic() + 10.0)
    assert plan.call().endpoint == A
    plan.answer(refusal(plan.call(), B))
    plan.resume()  # a pause after not_leader: no busy loop over the standbys
    assert plan.call().endpoint == B
    assert state.coordinator == B
    plan.answer(Timeout("no answer"))
    assert plan.call().endpoint == C, "a silent one is followed by the next"
    plan.answer(Timeout("no answer"))
    assert plan.call().endpoint == A, "round the list"
    ok: Answer = (Ok(plan.call().request.id), [])
    plan.answer(ok)
    assert plan.step is None and plan.result == ok
    assert state.coordinator == A
    assert [c.endpoint for c in plan.calls()] == [A, B, C, A]
    ids = [c.request.id for c in plan.calls()]
    assert len(set(ids)) == len(ids), "a fresh request id each attempt"
    assert all(isinstance(c.request, StatusRequest) for c in plan.calls())


def test_not_leader_is_followed_by_a_pause_before_the_next_call() -> None:
    state = ClientState(A, 2.0, coordinators=THREE)
    plan = ask(state, time.monotonic() + 10.0)
    plan.answer(refusal(plan.call(), None))
    assert isinstance(plan.step, Pause)
    plan.resume()
    assert plan.call().endpoint == B
    plan.answer(refusal(plan.call(), ELSEWHERE))
    assert isinstance(plan.step, Pause)
    plan.resume()
    assert plan.call().endpoint == C, "an unlisted leader is never asked"
    kinds = [type(s).__name__ for s, _, _ in plan.steps]
    assert kinds == ["Call", "Pause", "Call", "Pause", "Call"]


def test_a_timeout_is_followed_at_once_by_the_next_call() -> None:
    state = ClientState(A, 2.0, coordinators=THREE)
    plan = ask(state, time.monotonic() + 10.0)
    plan.answer(Timeout("no answer"))
    assert isinstance(plan.step, Call) and plan.step.endpoint == B


@pytest.mark.parametrize("timeout", [0.3, 2.0, 30.0])
def test_each_attempt_gets_at_most_its_share_of_the_time(timeout: float) -> None:
    state = ClientState(A, timeout, coordinators=THREE)
    share = min(COORDINATOR_ATTEMPT, timeout / (len(THREE) + 1))
    deadline = time.monotonic() + 100.0
    plan = ask(state, deadline)
    for _ in range(5):
        plan.answer(Timeout("no answer"))
    for step, before, after in plan.steps:
        assert isinstance(step, Call)
        assert before + share - 1e-6 <= step.deadline <= after + share + 1e-6
        assert step.deadline < deadline


def test_an_attempt_never_reaches_past_the_calls_deadline() -> None:
    state = ClientState(A, 30.0, coordinators=THREE)
    deadline = time.monotonic() + 0.05
    plan = ask(state, deadline)
    assert plan.call().deadline == deadline


def test_a_timeout_at_the_deadline_is_returned() -> None:
    state = ClientState(A, 2.0, coordinators=THREE)
    plan = ask(state, time.monotonic() - 0.001)
    timeout = Timeout("no answer")
    plan.answer(timeout)
    assert plan.step is None and plan.result is timeout
    assert len(plan.calls()) == 1


def test_not_leader_at_the_deadline_is_returned() -> None:
    state = ClientState(A, 2.0, coordinators=THREE)
    plan = ask(state, time.monotonic() - 0.001)
    answer = refusal(plan.call(), B)
    plan.answer(answer)
    assert plan.step is None and plan.result == answer


def test_an_ordinary_error_of_one_of_several_is_returned() -> None:
    state = ClientState(A, 2.0, coordinators=THREE)
    plan = ask(state, time.monotonic() + 10.0)
    answer: Answer = (Error(plan.call().request.id, "unavailable", "no chain yet"), [])
    plan.answer(answer)
    assert plan.step is None and plan.result == answer
    assert state.coordinator == A


def test_the_shared_flag_reaches_every_attempt() -> None:
    state = ClientState(A, 2.0, coordinators=THREE)
    plan = ask(state, time.monotonic() + 10.0, shared=True)
    plan.answer(Timeout("no answer"))
    plan.answer(refusal(plan.call(), A))
    plan.resume()
    assert [c.endpoint for c in plan.calls()] == [A, B, A]
    assert all(c.shared for c in plan.calls())


def test_the_next_call_starts_with_the_one_that_answered_last() -> None:
    state = ClientState(A, 2.0, coordinators=THREE)
    plan = ask(state, time.monotonic() + 10.0)
    plan.answer(refusal(plan.call(), C))
    plan.resume()
    plan.answer((Ok(plan.call().request.id), []))
    again = ask(state, time.monotonic() + 10.0)
    assert again.call().endpoint == C


# ---------------------------------------------------------------------------------- server_key


COORDINATOR_KEY = "c" * 40
NODE_KEY = "n" * 40
NODE = Member("node1", "tcp://127.0.0.1:7101", "tcp://127.0.0.1:7201", "tcp://127.0.0.1:7301", NODE_KEY)


def no_steps(step: Step) -> Answer | Timeout | None:
    raise AssertionError(f"no step expected, got {step!r}")


def test_server_key_is_the_coordinator_key_for_every_configured_coordinator() -> None:
    state = ClientState(A, 2.0, COORDINATOR_KEY, secured=True, coordinators=THREE)
    for endpoint in THREE:
        assert clientcore.run_blocking(clientcore.server_key(state, endpoint), no_steps) == COORDINATOR_KEY


def test_server_key_without_security_is_none() -> None:
    state = ClientState(A, 2.0, None, secured=False, coordinators=THREE)
    assert clientcore.run_blocking(clientcore.server_key(state, B), no_steps) is None


def test_server_key_of_a_node_comes_from_the_topology_not_the_coordinators() -> None:
    state = ClientState(A, 2.0, COORDINATOR_KEY, secured=True, coordinators=THREE)

    def answer(step: Step) -> Answer | Timeout | None:
        if isinstance(step, Pause):
            return None
        assert isinstance(step.request, TopologyRequest)
        return Ok(step.request.id, topology=Topology(1, (NODE,))), []

    assert clientcore.run_blocking(clientcore.server_key(state, NODE.service), answer) == NODE_KEY
    with pytest.raises(Unavailable):
        clientcore.run_blocking(clientcore.server_key(state, "tcp://127.0.0.1:9999"), answer)


# ---------------------------------------------------------------------------------- writes through a coordinator


NO_HEAD = Topology(epoch=1, members=())


class Script:
    """Answers each Call with what ``answer`` says; records every step."""

    def __init__(self, answer: Callable[[Call], Answer | Timeout]) -> None:
        self.answer = answer
        self.steps: list[Step] = []

    def __call__(self, step: Step) -> Answer | Timeout | None:
        self.steps.append(step)
        if isinstance(step, Pause):
            return None
        return self.answer(step)

    def sent(self) -> list[tuple[str, str]]:
        return [(s.endpoint, type(s.request).__name__) for s in self.steps if isinstance(s, Call)]


def write_v(state: ClientState, script: Script) -> Ok:
    build, size = clientcore.write_request("k", "v")
    return clientcore.run_blocking(clientcore.write(state, "k", build, size, state.deadline()), script)


def test_a_write_through_a_standby_follows_not_leader_and_is_resent() -> None:
    state = ClientState(A, 2.0, coordinators=THREE)
    assert "not_leader" in clientcore.WRITE_RETRYABLE

    def answer(call: Call) -> Answer | Timeout:
        if isinstance(call.request, TopologyRequest):
            return Ok(call.request.id, topology=NO_HEAD), []
        if call.endpoint == A:
            return not_leader(C, call.request.id), []
        return Ok(call.request.id, version=9), []

    script = Script(answer)
    assert write_v(state, script).version == 9
    assert script.sent() == [(A, "TopologyRequest"), (A, "Write"), (C, "TopologyRequest"), (C, "Write")]
    assert state.coordinator == C
    writes = [s for s in script.steps if isinstance(s, Call) and isinstance(s.request, Write)]
    assert writes[0].request.id != writes[1].request.id
    refused_at = script.steps.index(writes[0])
    assert isinstance(script.steps[refused_at + 1], Pause), "a pause before the resend"


def test_a_write_refused_by_a_standby_naming_an_unlisted_leader_goes_to_the_next() -> None:
    state = ClientState(A, 2.0, coordinators=THREE)

    def answer(call: Call) -> Answer | Timeout:
        if isinstance(call.request, TopologyRequest):
            return Ok(call.request.id, topology=NO_HEAD), []
        if call.endpoint != B:
            return not_leader(ELSEWHERE, call.request.id), []
        return Ok(call.request.id, version=4), []

    script = Script(answer)
    assert write_v(state, script).version == 4
    assert [e for e, kind in script.sent() if kind == "Write"] == [A, B]
    assert ELSEWHERE not in {e for e, _ in script.sent()}


def test_a_write_to_a_coordinator_that_never_connected_moves_on() -> None:
    state = ClientState(A, 2.0, coordinators=THREE)

    def answer(call: Call) -> Answer | Timeout:
        if isinstance(call.request, TopologyRequest):
            return Ok(call.request.id, topology=NO_HEAD), []
        if call.endpoint == A:
            return Timeout("no connection", delivered=False)
        return Ok(call.request.id, version=2), []

    script = Script(answer)
    assert write_v(state, script).version == 2
    assert [e for e, kind in script.sent() if kind == "Write"] == [A, B]
    assert state.coordinator == B
