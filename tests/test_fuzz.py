"""The OpenAPI document is a contract: schemathesis fuzzes a live server against it (every check but
"a schema-valid request is accepted": some rules, such as a cursor's validity or a title needing a first
message, cannot be said in OpenAPI, and their 400s are right), with a fixed seed and a bounded number of
examples per operation, and any finding fails the suite: a server error, a response or status code the
document does not declare, an undeclared content type, an invalid input accepted, a wrong answer to an
undeclared method."""

import os
import subprocess
import sys

import pytest

from agents.models import Agent
from tests.openai_server import OpenAIServer
from tests.servers import BASE_DIR, served

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SEED = 1
EXAMPLES = 6  # per operation and phase
MAX_SECONDS = 240


def test_schemathesis_finds_nothing(owner, tmp_path, django_db_blocker):
    Agent.objects.create(tenant=owner.tenant, name="llm", engine="openai", model="echo")
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[parameters]\n"path.tenant_id" = "{owner.tenant.id}"\n')
    with (
        OpenAIServer() as llm,
        django_db_blocker.unblock(),
        served(OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY="sk-test", OPENAI_MODELS="echo", REDIS_URL="") as base,
    ):
        command = [
            os.path.join(os.path.dirname(sys.executable), "st"), "--config-file", str(config), "run",
            f"{base}/api/schema/", "-H", f"Authorization: Bearer {owner.secret}",
            "--checks", "all", "--exclude-checks", "positive_data_acceptance",
            "--max-examples", str(EXAMPLES), "--seed", str(SEED), "--generation-allow-x00", "false",
            "--max-time", str(MAX_SECONDS), "--request-timeout", "30", "--workers", "1", "--no-color",
        ]  # fmt: skip
        environment = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks", "PYTHONPATH": str(BASE_DIR)}
        result = subprocess.run(
            command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=MAX_SECONDS + 120
        )
    start = result.stdout.find("FAILURES")
    report = result.stdout[start if start >= 0 else -6000 :][:20000] + result.stderr[-3000:]
    assert result.returncode == 0, report
    assert "No issues found" in result.stdout or " passed" in result.stdout, report
