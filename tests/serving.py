"""`python -m bot serve` as `make run` starts it: a real process, in a folder of its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def plain_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Slack or test setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "GREENLIGHT_"))}
    return {**env, **extra}


def cli(folder: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "bot", *args], cwd=folder, env=plain_env(), check=True)


def load_examples(folder: Path) -> None:
    """What `make seed` does: the examples, and spring-sale prepared."""
    cli(folder, "db", "upgrade")
    cli(
        folder,
        "profiles",
        "import",
        str(ROOT / "examples/profiles.csv"),
        "--audience",
        "newsletter",
    )
    cli(folder, "deliveries", "import", str(ROOT / "examples/deliveries.yml"))
    cli(folder, "deliveries", "prepare", "spring-sale")


def wait_until(condition: Callable[[], object], timeout: float = 45.0) -> None:
    """Poll a condition (never a clock) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        time.sleep(0.1)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@contextmanager
def serving(folder: Path, **env: str) -> Iterator[str]:
    """`serve` on a free port until the block ends; its base URL. Its log is printed
    at the end, so a failing test shows what the server said."""
    port = free_port()
    log_path = folder / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve"],
            cwd=folder,
            env=plain_env(PORT=str(port), **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://localhost:{port}"
        try:
            wait_until(lambda: answers(f"{url}/healthz") or process.poll() is not None)
            assert process.poll() is None, log_path.read_text()
            yield url
        finally:
            process.terminate()
            process.wait(30)
            print(log_path.read_text()[-4000:])
