"""The delivery most integration tests start from: some profiles, one delivery, prepared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bot.context import Context
from bot.services.deliveries_import import import_deliveries
from bot.services.prepare import prepare_delivery
from bot.services.profiles_import import import_profiles


def prepare_one(
    ctx: Context, folder: Path, emails: list[str], ref: str = "big", **fields: Any
) -> None:
    """Import `emails` into the audience `all` and delivery `ref` to them, then prepare it.

    Through the real imports (CSV and YAML files in `folder`), as a user would.
    `fields` are the delivery's other YAML fields (`text`, `html`, `efs`, `validity`…);
    the subject is "Hi" and the text "Hello" unless given.
    """
    (folder / "p.csv").write_text("email\n" + "\n".join(emails) + "\n")
    import_profiles(ctx, folder / "p.csv", "all")
    entry = {
        "ref": ref,
        "name": ref.capitalize(),
        "audience": "all",
        "from": "news@shop.example",
        "subject": "Hi",
        **({"text": "Hello"} if "html" not in fields else {}),
        **fields,
    }
    (folder / "d.yml").write_text(yaml.safe_dump([entry], sort_keys=False))
    import_deliveries(ctx, folder / "d.yml")
    prepare_delivery(ctx, ref)
