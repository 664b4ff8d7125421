"""The examples, through the command line, give the counts examples/README.md promises.

examples/profiles.csv: 300 rows — 293 distinct valid addresses, 4 upper/lower-case
variants of some of them, and 3 syntactically invalid addresses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.bootstrap import Root
from bot.entrypoints.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_json(root: Root, capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    code = main([*argv, "--json"], root=root)
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_examples_import_prepare_and_show(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    profiles = run_json(
        root,
        capsys,
        "profiles",
        "import",
        str(EXAMPLES / "profiles.csv"),
        "--audience",
        "newsletter",
    )
    assert (profiles["rows"], profiles["created"]) == (300, 300)
    deliveries = run_json(root, capsys, "deliveries", "import", str(EXAMPLES / "deliveries.yml"))
    assert sorted(deliveries["created"]) == ["black-friday", "spring-sale", "weekly-digest"]

    prepared = run_json(root, capsys, "deliveries", "prepare", "spring-sale")
    assert (prepared["state"], prepared["targeted"], prepared["excluded"]) == ("ready", 300, 7)
    assert prepared["to_deliver"] == 293
    assert prepared["errors"] == []

    shown = run_json(root, capsys, "deliveries", "show", "spring-sale")
    assert shown["state"] == "ready"
    assert shown["preparation"]["current"] is True
    assert shown["preparation"]["exclusions"] == {"duplicate address": 4, "invalid address": 3}
    assert shown["kpis"] == {
        "to_deliver": 293,
        "sent": 0,
        "delivered_pct": None,
        "bounces_errors_pct": None,
        "open_rate": None,
        "click_through_rate": None,
    }
    assert shown["logs"]["queued"] == 293

    listed = run_json(root, capsys, "deliveries", "list")
    states = {d["ref"]: (d["state"], d["prepared"]) for d in listed}
    assert states == {
        "black-friday": ("editing", False),
        "spring-sale": ("ready", True),
        "weekly-digest": ("editing", False),
    }

    # Importing the same files again changes nothing, and the preparation stays current.
    again = run_json(
        root,
        capsys,
        "profiles",
        "import",
        str(EXAMPLES / "profiles.csv"),
        "--audience",
        "newsletter",
    )
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 300)
    run_json(root, capsys, "deliveries", "import", str(EXAMPLES / "deliveries.yml"))
    assert run_json(root, capsys, "deliveries", "show", "spring-sale")["state"] == "ready"


def test_show_text_reads_like_the_deployment_block(
    root: Root, capsys: pytest.CaptureFixture[str]
) -> None:
    run_json(
        root,
        capsys,
        "profiles",
        "import",
        str(EXAMPLES / "profiles.csv"),
        "--audience",
        "newsletter",
    )
    run_json(root, capsys, "deliveries", "import", str(EXAMPLES / "deliveries.yml"))
    assert main(["deliveries", "prepare", "spring-sale"], root=root) == 0
    capsys.readouterr()
    assert main(["deliveries", "show", "spring-sale"], root=root) == 0
    out = capsys.readouterr().out
    assert "to deliver 293" in out
    assert "invalid address: 3" in out
    assert "Delivered           —" in out
