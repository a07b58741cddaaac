from services.gateway.circuit import CircuitBreaker, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_consecutive_failures() -> None:
    changes: list[CircuitState] = []
    b = CircuitBreaker(3, 5.0, clock=Clock(), on_change=changes.append)
    b.record_failure()
    b.record_failure()
    b.record_success()  # a success resets the count
    b.record_failure()
    b.record_failure()
    assert b.state == CircuitState.CLOSED and b.available()
    b.record_failure()
    assert b.state.name == "OPEN" and not b.available()
    assert changes == [CircuitState.OPEN]


def test_half_open_lets_one_trial_through_then_closes_on_success() -> None:
    clock = Clock()
    b = CircuitBreaker(1, 5.0, clock=clock)
    b.record_failure()
    clock.now = 4.9
    assert not b.available()
    clock.now = 5.0
    assert b.state == CircuitState.HALF_OPEN and b.available()
    b.acquire()
    assert not b.available(), "only one trial at a time"
    b.record_success()
    assert b.state.name == "CLOSED" and b.available()


def test_failed_trial_reopens_for_another_period() -> None:
    clock = Clock()
    b = CircuitBreaker(1, 5.0, clock=clock)
    b.record_failure()
    clock.now = 6.0
    b.acquire()
    b.record_failure()
    assert b.state == CircuitState.OPEN
    clock.now = 10.9
    assert not b.available()
    clock.now = 11.0
    assert b.available()


def test_cancelled_trial_frees_the_slot() -> None:
    clock = Clock()
    b = CircuitBreaker(1, 1.0, clock=clock)
    b.record_failure()
    clock.now = 1.0
    b.acquire()
    b.release()
    assert b.state == CircuitState.HALF_OPEN and b.available()
