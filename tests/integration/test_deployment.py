"""docker-compose.yml runs the commands the README documents, and the real CLI parses them.

No Docker engine runs in the tests: this checks the files, not a running stack.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from sqlalchemy import make_url

import cli.parser

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Deployment: PostgreSQL, Docker Compose"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def readme_commands() -> dict[str, list[str]]:
    """The ``spyglass ...`` commands of the README's deployment section, by subcommand."""
    text = (ROOT / "README.md").read_text()
    assert SECTION in text, f"README has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    commands: dict[str, list[str]] = {}
    for block in re.findall(r"```[a-z]*\n(.*?)```", section, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv[:1] == ["spyglass"]:
                assert argv[1] not in commands, f"two `spyglass {argv[1]}` commands"
                commands[argv[1]] = argv
    return commands


def service_command(compose: dict, service: str) -> list[str]:
    command = compose["services"][service]["command"]
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def test_compose_runs_exactly_the_readme_commands(compose):
    documented = readme_commands()
    assert set(documented) >= {"index", "serve"}
    assert service_command(compose, "indexer") == documented["index"]
    assert service_command(compose, "server") == documented["serve"]


def test_the_commands_parse_with_the_real_cli(compose):
    parser = cli.parser._parser()
    index = parser.parse_args(service_command(compose, "indexer")[1:])
    serve = parser.parse_args(service_command(compose, "server")[1:])
    assert index.func is cli.parser.cmd_index and serve.func is cli.parser.cmd_serve
    assert index.db == serve.db and index.db.startswith("postgresql+psycopg://")
    for sae in index.sae:
        assert (ROOT / sae / "cfg.json").is_file(), f"{sae} is not in the image"
    assert serve.host == "0.0.0.0"
    # The URL names the postgres service and the credentials it is started with.
    env = compose["services"]["postgres"]["environment"]
    url = make_url(index.db)
    assert (url.host, url.username, url.password, url.database) == (
        "postgres",
        env["POSTGRES_USER"],
        env["POSTGRES_PASSWORD"],
        env["POSTGRES_DB"],
    )
    # The write token comes from the environment, never from the file.
    env = compose["services"]["server"]["environment"]
    assert env["SPYGLASS_WRITE_TOKEN"] == "${SPYGLASS_WRITE_TOKEN:-}"
    assert "SPYGLASS_WRITE_TOKEN" not in compose["services"]["indexer"].get("environment", {})
    ports = compose["services"]["server"]["ports"]
    assert any(p.endswith(f":{serve.port}") for p in ports)
    health = " ".join(compose["services"]["server"]["healthcheck"]["test"])
    assert f"127.0.0.1:{serve.port}/healthz" in health


def test_services_start_in_order_from_one_image(compose):
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["indexer"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["indexer"]["restart"] == "no"
    assert services["server"]["depends_on"] == {
        "indexer": {"condition": "service_completed_successfully"}
    }
    assert services["indexer"]["image"] == services["server"]["image"]
    assert services["indexer"]["build"] == services["server"]["build"] == "."


def test_the_image_installs_what_the_makefile_installs():
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    (torch,) = re.findall(r"pip install --quiet (torch==\S+)", makefile)
    assert f"pip install {torch} --index-url https://download.pytorch.org/whl/cpu" in dockerfile
    (no_deps,) = re.findall(r"pip install --quiet (--no-deps .+)", makefile)
    assert f"pip install {no_deps}" in dockerfile
    assert 'pip install -e ".[postgres]"' in dockerfile
    assert dockerfile.index(torch) < dockerfile.index(".[postgres]") < dockerfile.index(no_deps)
