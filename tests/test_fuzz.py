"""The OpenAPI document is a contract: schemathesis fuzzes a live server against it with every check, a
fixed seed and a bounded number of examples per operation, and any finding fails the suite: a server
error, a response or status code the document does not declare, an undeclared content type, an invalid
input accepted, a schema-valid input refused, a wrong answer to an undeclared method.

Some rules depend on stored data, on earlier requests or on the operator's configuration, or tie two
fields together, which OpenAPI 3.0 cannot state: a `next` cursor or a `Last-Event-ID` is valid only as
the server issued it, attachments and `parent_id` must name the conversation's own files and messages,
`continue` needs a reply to continue, a title needs a first message, a model must be one the operator
offers, /v1 files must be the tenant's, an Idempotency-Key already used with another body is 422, a
thumbs-down needs its category, a multipart part without a file name is a form field and not a file, and
a NUL character is 400 in any string. A schema-valid request that breaks one is rightly refused on those
operations (CONFIG), and only there."""

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


CONFIG = """
[parameters]
"path.tenant_id" = "{tenant_id}"

# More files than FILE_MAX_PER_REQUEST is 413 Content Too Large (refused while the upload streams in).
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]

[[operations]]  # a `next` cursor, or a Last-Event-ID, the server did not issue
include-name-regex = "^GET .*/(agents|conversations|search|messages|files|related-documents|data-frames|stream|tools)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]  # the same for webhook endpoints and their deliveries
include-name-regex = "^GET .*/(webhooks|deliveries)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]  # the same for MCP servers
include-name-regex = "^GET .*/mcp-servers$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]  # a server the fuzzer registered does not resolve: its tools are a documented 502 bad_gateway
include-name-regex = "^GET .*/mcp-servers/[{]server_id[}]/tools$"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "502"]

[[operations]]  # a model the operator does not offer (OPENAI_MODELS)
include-name-regex = "^(POST|PATCH) .*/agents(/[{]agent_id[}])?$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]  # attachments, parent_id, continue and regenerate name what the conversation has; a title;
# an Idempotency-Key the fuzzer sent before with another body
include-name-regex = "^POST .*/conversations/[{]conversation_id[}]/(messages|stream|title)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "422", "429", "5xx"]

[[operations]]  # file parts without a file name; a thumbs-down without its category; an id holding a NUL
include-name-regex = "^(POST .*/files|PUT .*/feedback|POST .*/bulk-delete)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]  # a tool name already used; a URL, or header names, that JSON Schema types cannot describe
# (for webhooks too)
include-name-regex = "^(POST|PATCH) .*/(tools|mcp-servers|webhooks)(/[{](tool|server|webhook)_id[}])?$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]  # a name and its alias `title` both; an edit of an assistant message, or in place after a reply;
# an append after a message of another conversation
include-name-regex = "^(POST|PATCH) .*/(conversations(/[{]conversation_id[}])?|messages/([{]message_id[}]|append))$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]  # a fork from a message of another conversation; an import whose references, bytes or
# Parquet only the values make wrong (a parent listed later, a sha256 of other bytes), or whose files pass
# the tenant's storage limit; an Idempotency-Key the fuzzer sent before with another body
include-name-regex = "^POST .*/conversations/([{]conversation_id[}]/fork|import)$"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "400", "401", "403", "404", "409", "413", "422", "429", "5xx",
]

[[operations]]  # `from` more than 366 days before `to`, or after it
include-name-regex = "^GET .*/(usage|feedback)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]  # a Range past the end of the file
include-name-regex = "^GET .*/files/download/$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "416", "429", "5xx"]

[[operations]]  # messages' files must be the tenant's
include-name-regex = "^POST /v1/conversation$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]
"""


def test_schemathesis_finds_nothing(owner, tmp_path, django_db_blocker):
    Agent.objects.create(tenant=owner.tenant, name="llm", engine="openai", model="echo")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.replace("{tenant_id}", owner.tenant.id))
    with (
        OpenAIServer() as llm,
        django_db_blocker.unblock(),
        served(OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY="sk-test", OPENAI_MODELS="echo", REDIS_URL="") as base,
    ):
        command = [
            os.path.join(os.path.dirname(sys.executable), "st"), "--config-file", str(config), "run",
            f"{base}/api/schema/", "-H", f"Authorization: Bearer {owner.secret}",
            "--checks", "all",
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
