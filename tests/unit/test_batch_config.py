"""The ledger's keys in [inboxes.batch] (SPEC §4): defaults, sizes, and refused values."""

from __future__ import annotations

import pytest

from inboxd.config import ConfigError, parse_config

BASE = {"inboxes": [{"path": "/srv/inbox/b", "purpose": "batch-api", "batch": {}}]}


def batch(**keys):
    cfg = parse_config({"inboxes": [{**BASE["inboxes"][0], "batch": keys}]})
    return cfg.inboxes[0].batch


def test_defaults():
    b = batch()
    assert (b.max_requests_per_job, b.max_bytes_per_job, b.resubmit_rounds, b.max_jobs_in_flight) == (
        50_000, 100_000_000, 3, 0)
    assert b.resubmit_codes == [429, 500, 502, 503, 504]


def test_operators_may_set_less():
    b = batch(max_requests_per_job=1000, max_bytes_per_job="10MiB", resubmit_rounds=0, resubmit_codes=[429],
              max_jobs_in_flight=2)
    assert (b.max_requests_per_job, b.max_bytes_per_job, b.resubmit_rounds, b.resubmit_codes,
            b.max_jobs_in_flight) == (1000, 10 * 2**20, 0, [429], 2)


@pytest.mark.parametrize("keys, where", [
    ({"max_requests_per_job": 0}, "max_requests_per_job"),
    ({"max_bytes_per_job": "0"}, "max_bytes_per_job"),
    ({"resubmit_rounds": -1}, "resubmit_rounds"),
    ({"resubmit_codes": [42]}, "resubmit_codes"),
    ({"max_jobs_in_flight": -1}, "max_jobs_in_flight"),
])
def test_bad_values_name_the_key(keys, where):
    with pytest.raises(ConfigError) as exc:
        batch(**keys)
    assert where in str(exc.value)
