"""SearchGate: walks of the export for unplaced handles take a bounded share of the time."""
from nfsd.fs.searchgate import SearchGate


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def walk(gate: SearchGate, clock: Clock, seconds: float, seen: set[int] | None = None) -> None:
    started = clock.t
    clock.t += seconds
    gate.spend(started)
    gate.finished(seen)


def test_a_few_walks_at_once_then_a_tenth_of_the_time():
    """A few files moved behind the server's back are each found at once (the burst); a
    client sending handles that each need a walk gets at most a tenth of the time after it."""
    clock = Clock()
    gate = SearchGate(share=0.1, clock=clock, burst=0.5)
    at_once = 0
    while gate.may_walk():
        walk(gate, clock, 0.1)
        at_once += 1
    assert at_once == 6  # half a second of credit, and what it refilled meanwhile
    walked = 0.0
    start = clock.t
    for _ in range(10_000):
        if gate.may_walk():
            walk(gate, clock, 0.1)
            walked += 0.1
        else:
            clock.t += 0.01
    assert walked <= 0.1 * (clock.t - start) + 0.1  # (+ the one walk that overdraws)


def test_a_complete_walk_answers_for_numbers_it_did_not_meet_until_something_moves():
    clock = Clock()
    gate = SearchGate(clock=clock)
    walk(gate, clock, 0.01, {5, 6, 7})
    assert gate.known_absent(8) and not gate.known_absent(6)
    gate.moved()
    assert not gate.known_absent(8)
    walk(gate, clock, 0.01, {5})
    assert gate.known_absent(8)
    clock.t += 6.0  # older than SNAPSHOT_SECONDS
    assert not gate.known_absent(8)
    assert gate._seen is None  # and its numbers' memory is let go
    walk(gate, clock, 0.01, {5})
    walk(gate, clock, 0.01, None)  # a walk cut short: no answers from the one before
    assert not gate.known_absent(8)
