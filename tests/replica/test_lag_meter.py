"""The staleness bound and the two settings, without a database."""

from __future__ import annotations

import pytest

from boundq.core.config import load_settings
from boundq.core.errors import ConfigError
from boundq.server.replica import LagMeter


def test_caught_up_replica_is_as_old_as_the_newest_sample() -> None:
    meter = LagMeter(keep_s=10)
    meter.add(100.0, 500)
    meter.add(100.5, 700)
    assert meter.lag(replayed=700, now=100.6) == pytest.approx(0.1)
    assert meter.lag(replayed=900, now=100.6) == pytest.approx(0.1)  # ahead of the sample


def test_a_replica_behind_is_bounded_by_the_newest_sample_it_passed() -> None:
    meter = LagMeter(keep_s=10)
    for i in range(6):  # the primary moves 100 bytes every half second
        meter.add(100.0 + i * 0.5, 1000 + i * 100)
    assert meter.lag(replayed=1250, now=102.6) == pytest.approx(102.6 - 101.0)
    assert meter.lag(replayed=1000, now=102.6) == pytest.approx(2.6)


def test_an_idle_primary_does_not_make_a_caught_up_replica_look_late() -> None:
    """The position stays put while nothing is written: the newest sample still matches,
    however long ago the last transaction was."""
    meter = LagMeter(keep_s=10)
    for i in range(100):
        meter.add(i * 0.5, 4242)
    assert meter.lag(replayed=4242, now=49.6) == pytest.approx(0.1)


def test_behind_every_kept_sample_is_unknown() -> None:
    meter = LagMeter(keep_s=2)
    assert meter.lag(replayed=0, now=0.0) is None  # no history yet
    for i in range(10):
        meter.add(i * 0.5, 1000 + i)
    # samples older than keep_s are gone; the replica is behind all that remain
    assert meter.lag(replayed=1001, now=4.6) is None
    assert meter.lag(replayed=1009, now=4.6) == pytest.approx(0.1)


@pytest.mark.parametrize(("name", "value"), [
    ("REPLICA_MAX_LAG_SECONDS", "0.5"), ("REPLICA_MAX_LAG_SECONDS", "soon"),
    ("REPLICA_MAX_LAG_SECONDS", "nan"), ("REPLICA_DATABASE_URL", "host=x port"),
])
def test_bad_replica_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({name: value}, dotenv=None)
    message = str(refused.value)
    assert message.startswith(f"{name}=") and "\n" not in message


def test_replica_settings_defaults_and_values() -> None:
    assert load_settings({}, dotenv=None).replica_database_url is None
    assert load_settings({}, dotenv=None).replica_max_lag_seconds == 5.0
    settings = load_settings({"REPLICA_DATABASE_URL": "postgresql://u@127.0.0.1:5433/boundq",
                              "REPLICA_MAX_LAG_SECONDS": "2.5"}, dotenv=None)
    assert settings.replica_database_url == "postgresql://u@127.0.0.1:5433/boundq"
    assert settings.replica_max_lag_seconds == 2.5
