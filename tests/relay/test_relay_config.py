"""The relay's configuration (SPEC §10.9): a TOML file and E2E_RELAY_<SECTION>_<NAME>
variables, checked at start: a relay given a setting that does not exist, of the wrong type or
out of range does not start (exit status 2) and says which setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from relayhelp import ROOT

from e2e.errors import ConfigError
from e2e.platform.policy import PolicyConfig
from e2e.relay.config import RelayConfig, load


def _serve(tmp_path: Path, text: str | None, env: dict[str, str] | None = None) -> tuple[int, str]:
    args = [sys.executable, "-m", "e2e", "relay", "serve", "--db", str(tmp_path / "r.db"),
            "--port", "1"]  # fmt: skip
    if text is not None:
        conf = tmp_path / "relay.toml"
        conf.write_text(text)
        args += ["--config", str(conf)]
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={**os.environ, **(env or {})})  # fmt: skip
    return r.returncode, r.stderr


@pytest.mark.parametrize(
    ("text", "env", "named"),
    [
        ("[edge]\nheader_timeout = 0\n", {}, "edge.header_timeout: must be at least"),
        ("[edge]\nheader_timeout = 'soon'\n", {}, "edge.header_timeout: must be a float"),
        ("[edge]\nheadr_timeout = 1\n", {}, "edge.headr_timeout: no such setting"),
        ("[egde]\n", {}, "egde: no such section"),
        ("[edge\n", {}, "not TOML"),
        (None, {"E2E_RELAY_RATE_BURST": "lots"}, "rate.burst: not a float"),
        (None, {"E2E_RELAY_EDGE_MAX_BODY": "1"}, "edge.max_body: must be at least 4096"),
        ("[rate]\nburst = 10\nlease = 20\n", {}, "rate.lease: must be at most rate.burst"),
        # the business platform's settings (SPEC §17.1, §17.3)
        (None, {"E2E_RELAY_PRICES_UTILITY": "-1"}, "prices.utility: must be at least 0"),
        ("[prices]\nauthentication = 'cheap'\n", {}, "prices.authentication: must be a int"),
        (None, {"E2E_RELAY_TIERS_LIMITS": "250,x"}, "tiers.limits: not a list of integers"),
        ("[tiers]\nlimits = [1000, 250]\n", {}, "tiers.limits: must be ascending"),
        ("[tiers]\nlimits = []\n", {}, "tiers.limits: must have 1 to 16 entries"),
        ("[tiers]\nlimits = [0, 10]\n", {}, "tiers.limits: must be at least 1, not 0"),
        ("[tiers]\nlimits = 250\n", {}, "tiers.limits: must be a list of integers"),
        (None, {"E2E_RELAY_TIERS_MEDIUM": "0.5"}, "tiers.medium: must be at most tiers.low"),
        (None, {"E2E_RELAY_TIERS_LOW": "nan"}, "tiers.low: not a number"),
        ("[tiers]\nmin_negatives = 0\n", {}, "tiers.min_negatives: must be at least 1"),
        # ad entry points (SPEC §17.4)
        (None, {"E2E_RELAY_ADS_ENTRY_KEY": "ab" * 31}, "ads.entry_key: must be an Ed25519"),
        ("[ads]\nentry_key = 'not hex at all'\n", {}, "ads.entry_key: must be an Ed25519"),
        (None, {"E2E_RELAY_ADS_ENTRY_WINDOW_SECONDS": "86400"},
         "ads.entry_window_seconds: must be longer than policy.window_seconds"),
        ("[policy]\nwindow_seconds = 7200\n[ads]\nentry_window_seconds = 3600\n", {},
         "ads.entry_window_seconds: must be longer than policy.window_seconds"),
        (None, {"E2E_RELAY_ADS_REPORT_TOKEN": "short"}, "ads.report_token: must be at least 16"),
        (None, {"E2E_RELAY_ADS_BUCKET_SECONDS": "1"}, "ads.bucket_seconds: must be at least 60"),
        # the PostgreSQL store's writers and bound (SPEC §10.8)
        (None, {"E2E_RELAY_OPS_PG_WRITERS": "0"}, "ops.pg_writers: must be at least 1"),
        (None, {"E2E_RELAY_OPS_PG_WRITERS": "33"}, "ops.pg_writers: must be at most 32"),
        (None, {"E2E_RELAY_OPS_PG_TIMEOUT": "0"}, "ops.pg_timeout: must be at least 0.5"),
    ],
)
def test_a_bad_setting_stops_the_relay_naming_it(
    tmp_path: Path, text: str | None, env: dict[str, str], named: str
) -> None:
    code, err = _serve(tmp_path, text, env)
    assert code == 2 and named in err, err


def test_file_then_environment_then_flags() -> None:
    environ = {"E2E_RELAY_EDGE_HEADER_TIMEOUT": "2.5", "E2E_RELAY_CRASH_ITERS": "50"}
    assert load(None, environ).edge.header_timeout == 2.5  # other sections' names are ignored
    assert load(None, {}) == RelayConfig()
    c = RelayConfig().replace("rate", rate=5.0)
    assert c.rate.rate == 5.0 and c.rate.burst == 400.0
    with pytest.raises(ConfigError, match="rate.rate: must be at least"):
        RelayConfig().replace("rate", rate=0.0)


def test_the_file_sets_the_policy(tmp_path: Path) -> None:
    conf = tmp_path / "relay.toml"
    conf.write_text("[policy]\nwindow_seconds = 3600\n[prices]\nmarketing = 95\n")
    c = load(str(conf), {"E2E_RELAY_PRICES_TEMPLATE": "50"})
    p = c.policy_config()
    assert (p.window_seconds, p.prices.marketing, p.prices.template) == (3600, 95, 50)


def test_the_file_sets_the_business_platform(tmp_path: Path) -> None:
    """Category prices (SPEC §17.1) and messaging tiers (SPEC §17.3) come from the
    configuration, the environment winning over the file."""
    conf = tmp_path / "relay.toml"
    conf.write_text("[prices]\nutility = 12\n[tiers]\nlimits = [2, 5]\nmin_negatives = 4\n")
    p = load(str(conf), {"E2E_RELAY_PRICES_AUTHENTICATION": "17",
                         "E2E_RELAY_TIERS_LOW": "0.25"}).policy_config()  # fmt: skip
    assert (p.prices.utility, p.prices.authentication) == (12, 17)
    assert (p.tiers.limits, p.tiers.low, p.tiers.min_negatives) == ((2, 5), 0.25, 4)
    assert p.tiers.limit(1) == 5 and p.tiers.limit(2) is None
    env = load(None, {"E2E_RELAY_TIERS_LIMITS": "3,30,300"}).policy_config()
    assert env.tiers.limits == (3, 30, 300)
    assert RelayConfig().policy_config() == PolicyConfig()  # the defaults are the rules' own
