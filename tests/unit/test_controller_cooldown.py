"""`CooldownRule`, table by table: KubevirtMigrationAware's cooldown exactly as the plugin computes it (ref §4):
min(max(15 min, last migration's duration) x 2^(n-1), 6 h), n = migrations ended in the last 48 h (strictly),
counted from the last migration's end; the cap only when non-zero; psi-relief's variant counts successes only."""

from __future__ import annotations

import pytest
from controller_builders import NOW, make_vm

from controller.config import CooldownConfig, MigrationAwareConfig
from controller.cooldown import CooldownRule
from controller.model import PastMigration

H = 3600.0
PLUGIN = CooldownRule.from_config(MigrationAwareConfig(), count_failed=True)  # the baseline's, profile main
RELIEF = CooldownRule.from_config(CooldownConfig())  # psi-relief's vmCooldown: successes only


def moves(*ended_ago: float, duration: float = 60.0, failed: tuple[int, ...] = ()) -> tuple[PastMigration, ...]:
    """Migrations that ended `ended_ago` seconds before NOW (give them oldest first); `failed`: their indexes."""
    return tuple(
        PastMigration(NOW - ago - duration, NOW - ago, "n1", "n0", succeeded=i not in failed)
        for i, ago in enumerate(ended_ago)
    )


def test_the_plugin_defaults_are_15_minutes_6_hours_48_hours_doubling():
    assert CooldownRule(base=15 * 60, growth=2, maximum=6 * H, window=48 * H, count_failed=True) == PLUGIN


@pytest.mark.parametrize(
    ("rule", "history", "effective"),
    [
        pytest.param(PLUGIN, (), 0.0, id="never-migrated"),
        pytest.param(PLUGIN, moves(100), 900.0, id="n1-base-15min"),
        pytest.param(PLUGIN, moves(5000, 100), 1800.0, id="n2-doubles"),
        pytest.param(PLUGIN, moves(9000, 5000, 100), 3600.0, id="n3-1h"),
        pytest.param(PLUGIN, moves(9000, 7000, 5000, 100), 7200.0, id="n4-2h"),
        pytest.param(PLUGIN, moves(9000, 8000, 7000, 6000, 100), 14_400.0, id="n5-4h"),
        pytest.param(PLUGIN, moves(*range(9000, 4000, -1000), 100), 21_600.0, id="n6-8h-capped-at-6h"),
        pytest.param(PLUGIN, moves(*range(30_000, 0, -1000)), 21_600.0, id="n30-still-6h"),
        pytest.param(PLUGIN, moves(100, duration=1200.0), 1200.0, id="slow-migration-sets-the-base"),
        pytest.param(PLUGIN, moves(5000, 100, duration=1200.0), 2400.0, id="slow-base-doubles"),
        pytest.param(PLUGIN, moves(100, duration=7 * H), 6 * H, id="base-above-the-cap-is-capped"),
        pytest.param(
            PLUGIN,
            (PastMigration(NOW - 9000, NOW - 5000, "n1", "n0"), PastMigration(NOW - 160, NOW - 100, "n0", "n1")),
            1800.0,
            id="base-is-the-last-migrations-duration-not-the-longest",
        ),
        pytest.param(PLUGIN, moves(200_000, 100), 900.0, id="older-than-48h-forgotten"),
        pytest.param(PLUGIN, moves(48 * H, 100), 900.0, id="exactly-48h-ago-forgotten"),
        pytest.param(PLUGIN, moves(48 * H - 1, 100), 1800.0, id="just-inside-48h-counted"),
        pytest.param(PLUGIN, moves(50 * H), 900.0, id="n0-no-growth"),
        pytest.param(PLUGIN, moves(5000, 100, failed=(0,)), 1800.0, id="plugin-counts-a-failed-migration"),
        pytest.param(RELIEF, moves(5000, 100, failed=(0,)), 900.0, id="psi-relief-counts-successes-only"),
        pytest.param(
            CooldownRule(900, 2, 0, 48 * H), moves(*range(30_000, 20_000, -1000), 100), 900 * 2**10, id="max-0-no-cap"
        ),
        pytest.param(CooldownRule(900, 2, 0, 48 * H), moves(*range(2000, 0, -1)), float("inf"), id="no-cap-overflow"),
        pytest.param(CooldownRule(900, 3, 6 * H, 48 * H), moves(5000, 2000, 100), 8100.0, id="growth-factor-3"),
    ],
)
def test_effective_cooldown(rule, history, effective):
    assert rule.effective(make_vm("vm", "n0", history=history), NOW) == effective


@pytest.mark.parametrize(
    ("history", "now", "reason"),
    [
        pytest.param((), NOW, None, id="never-migrated"),
        pytest.param(moves(100), NOW, "cooldown: 1 move(s) in 48h, last 100s ago < 900s", id="within-15min"),
        pytest.param(moves(100), NOW + 799, "cooldown: 1 move(s) in 48h, last 899s ago < 900s", id="one-second-left"),
        pytest.param(moves(100), NOW + 800, None, id="exactly-elapsed-admits"),
        pytest.param(moves(5000, 100), NOW, "cooldown: 2 move(s) in 48h, last 100s ago < 1800s", id="doubled"),
        pytest.param(moves(5000, 100), NOW + 1700, None, id="doubled-then-elapsed"),
        pytest.param(
            moves(*range(9000, 4000, -1000), 100),
            NOW + 6 * H - 101,
            "cooldown: 6 move(s) in 48h, last 21599s ago < 21600s",
            id="capped-6h-still-blocking",
        ),
        pytest.param(moves(*range(9000, 4000, -1000), 100), NOW + 6 * H - 100, None, id="capped-6h-elapsed"),
        pytest.param(moves(100, failed=(0,)), NOW, "cooldown: 1 move(s) in 48h, last 100s ago < 900s", id="failed"),
        pytest.param(moves(-60), NOW, "cooldown: 1 move(s) in 48h, last -60s ago < 900s", id="end-in-the-future"),
    ],
)
def test_blocking_runs_from_the_last_migrations_end(history, now, reason):
    assert PLUGIN.blocking(make_vm("vm", "n0", history=history), now) == reason
