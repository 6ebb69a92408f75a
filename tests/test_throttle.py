"""The API key throttle: a sliding window of requests per key, with the time a refused client must wait."""

import pytest
from django.test import override_settings

pytestmark = pytest.mark.django_db

WINDOW_START = 1_800_000_000 - 1_800_000_000 % 60  # a minute's first second


@pytest.fixture
def clock(monkeypatch):
    now = {"at": WINDOW_START + 10.0}
    monkeypatch.setattr("tenants.throttles.time.time", lambda: now["at"])
    return now


def get(owner):
    return owner.client.get(f"{owner.base}/agents")


@override_settings(THROTTLE_RATE="3/min")
def test_a_refused_request_spends_nothing_and_says_when_to_come_back(owner, clock):
    assert [get(owner).status_code for _ in range(3)] == [200, 200, 200]
    refused = get(owner)
    assert refused.status_code == 429
    # 50 s to this minute's end, then the 3 requests weigh less as the window slides: 1 + 3 * (1 - x/60) <= 3
    # from x = 20 s on.
    assert refused["Retry-After"] == "70"
    for _ in range(5):  # retrying early keeps being refused, and costs nothing
        assert get(owner).status_code == 429
    clock["at"] = WINDOW_START + 60 + 19
    assert get(owner).status_code == 429
    clock["at"] = WINDOW_START + 60 + 20
    assert get(owner).status_code == 200  # had the refusals counted, the previous minute would weigh 8 * 2/3


@override_settings(THROTTLE_RATE="4/min")
def test_the_previous_minute_counts_for_its_share_of_the_sliding_window(owner, clock):
    assert [get(owner).status_code for _ in range(4)] == [200, 200, 200, 200]
    clock["at"] = WINDOW_START + 60 + 30  # half of the previous minute's 4 still inside the window: 2
    assert [get(owner).status_code for _ in range(3)] == [200, 200, 429]
    refused = get(owner)  # 2 + 2 + this one: 5 > 4, gone once 1 of the previous minute's share has slid out
    assert refused.status_code == 429 and refused["Retry-After"] == "15"


def test_keys_are_throttled_apart(owner, outsider, clock):
    with override_settings(THROTTLE_RATE="1/min"):
        assert get(owner).status_code == 200
        assert get(owner).status_code == 429
        assert get(outsider).status_code == 200
