"""Project files a user meets first stay in step with the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from bot.config import Settings

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "slack" / "manifest.schema.1.0.0.json"  # Slack's, shipped with the project


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z_]+)=", text, flags=re.M))
    assert documented == {name.upper() for name in Settings.model_fields}


def test_manifest_is_valid_against_slacks_schema() -> None:

    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    jsonschema.validate(manifest, json.loads(SCHEMA.read_text()))


def test_manifest_rejects_what_the_schema_forbids() -> None:
    """The check above can fail: a manifest without display_information is refused."""

    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    del manifest["display_information"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest, json.loads(SCHEMA.read_text()))
