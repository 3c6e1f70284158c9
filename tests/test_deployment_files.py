"""The deployment files say what the code has: the image copies every package the project
installs, and every command docker-compose.yml runs exists (no Docker engine is needed to
check that much)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from typer.testing import CliRunner

from entrypoints.cli import app
from tests.test_cli import ENV

ROOT = Path(__file__).resolve().parent.parent


def test_the_image_copies_every_package_the_project_installs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]
                ["include"]}
    copied = set(re.findall(r"^COPY (\w+) \1$", (ROOT / "Dockerfile").read_text(), re.M))
    assert packages == copied


def test_every_command_the_compose_file_runs_exists() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    commands = [json.loads(c) for c in re.findall(r"command: (\[.*\])", compose)]
    assert len(commands) >= 4
    for command in commands:
        assert command[0] == "pension-ledger"
        r = CliRunner().invoke(app, [*command[1:], "--help"], env=ENV)
        assert r.exit_code == 0, (command, r.stdout, r.stderr)
    assert "pension-ledger keygen" in compose  # how to make the CIPHER_KEY it asks for
    assert CliRunner().invoke(app, ["keygen"]).exit_code == 0


def test_the_kafka_services_wait_for_kafka_and_consume_what_the_relay_publishes() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    services = dict(re.findall(r"^  (\w+):\n((?:    .*\n|\n)*)", compose, re.M))
    kafka = {name for name, body in services.items()
             if re.search(r'command: \["pension-ledger", "(relay|consume)"', body)}
    assert kafka == {"relay", "consume"}
    for name in kafka:
        assert "depends_on: [postgres, kafka]" in services[name], name
    # Both use the default topic prefix, or the same one.
    prefixes = {name: re.findall(r'"--prefix", "([^"]+)"', services[name]) for name in kafka}
    assert prefixes["relay"] == prefixes["consume"]
