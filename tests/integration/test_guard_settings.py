"""The send guard's settings: a delivery's `guard:` (checked at import, changed in
place, even while it sends) and the global GUARD_… settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from scenario import CLI, settings_for

from bot.config import SettingsError
from bot.context import Context
from bot.domain.guard import GuardPolicy, policy_for
from bot.domain.lifecycle import DeliveryState
from bot.services.imports.deliveries import import_deliveries
from bot.services.imports.problems import InputRejected
from bot.services.imports.profiles import import_profiles
from bot.store.models import Delivery

BASE: dict[str, Any] = {
    "ref": "promo",
    "name": "Promo",
    "audience": "buyers",
    "from": "news@shop.example",
    "subject": "Hi",
    "text": "Hello",
}


def write(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "d.yml"
    path.write_text(yaml.safe_dump([{**BASE, **changes}]))
    return path


def stored(ctx: Context) -> Delivery:
    with ctx.sessions() as s:
        d = s.query(Delivery).one()
        s.expunge(d)
        return d


@pytest.fixture
def buyers(ctx: Context, tmp_path: Path) -> None:
    csv = tmp_path / "p.csv"
    csv.write_text("email\na@x.example\n")
    import_profiles(ctx, CLI, csv, "buyers")


@pytest.mark.usefixtures("buyers")
@pytest.mark.parametrize(
    ("written", "column"),
    [
        (None, None),
        ("off", {"off": True}),
        (False, {"off": True}),  # YAML 1.1 reads a bare `off` as false
        ({"rate": 0.1}, {"rate": 0.1}),
        (
            {"rate": 0.1, "window": 300, "minimum": 100},
            {"rate": 0.1, "window": 300, "minimum": 100},
        ),
    ],
)
def test_what_a_delivery_guard_stores(
    ctx: Context, tmp_path: Path, written: Any, column: Any
) -> None:
    changes = {} if written is None else {"guard": written}
    import_deliveries(ctx, CLI, write(tmp_path, **changes))
    assert stored(ctx).guard == column


def test_a_bare_off_in_yaml_turns_the_guard_off(buyers: None, ctx: Context, tmp_path: Path) -> None:
    path = tmp_path / "d.yml"
    path.write_text(yaml.safe_dump([BASE]).rstrip() + "\n  guard: off\n")
    import_deliveries(ctx, CLI, path)
    assert stored(ctx).guard == {"off": True}


@pytest.mark.usefixtures("buyers")
@pytest.mark.parametrize(
    ("written", "field", "reason"),
    [
        ("on", "guard", "write guard: off"),
        (True, "guard", "write guard: off"),
        ({"rate": 1.5}, "guard.rate", "less than 1"),
        ({"window": 100, "minimum": 200}, "guard.minimum", "not be above"),
        ({"rat": 0.1}, "guard.rat", "did you mean rate?"),
    ],
)
def test_a_wrong_guard_is_refused_with_its_field(
    ctx: Context, tmp_path: Path, written: Any, field: str, reason: str
) -> None:
    with pytest.raises(InputRejected) as caught:
        import_deliveries(ctx, CLI, write(tmp_path, guard=written))
    (problem,) = caught.value.problems
    assert problem.field == field
    assert reason in problem.reason, problem.reason


@pytest.mark.usefixtures("buyers")
def test_the_guard_changes_in_place_while_the_delivery_sends(ctx: Context, tmp_path: Path) -> None:
    import_deliveries(ctx, CLI, write(tmp_path))
    with ctx.sessions.begin() as s:
        s.query(Delivery).update({"state": DeliveryState.IN_PROGRESS})
    import_deliveries(ctx, CLI, write(tmp_path, guard="off"))
    d = stored(ctx)
    assert (d.guard, d.state) == ({"off": True}, DeliveryState.IN_PROGRESS)
    assert not policy_for(d.guard, ctx.settings.guard).enabled


def test_global_settings(tmp_path: Path) -> None:
    assert settings_for(tmp_path).guard == GuardPolicy(0.05, 500, 200)
    custom = settings_for(tmp_path, guard_rate=0.1, guard_window=1000, guard_minimum=50)
    assert custom.guard == GuardPolicy(0.1, 1000, 50)
    with pytest.raises(SettingsError, match="GUARD_MINIMUM must not be above GUARD_WINDOW"):
        settings_for(tmp_path, guard_window=100, guard_minimum=200)
    with pytest.raises(SettingsError, match="GUARD_RATE"):
        settings_for(tmp_path, guard_rate=0)
