"""Fixtures: two tenants (an owner and an outsider), each with an API key, an agent and a client."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import boto3
import httpx
import pytest
from django.core.cache import cache
from django.db import connection
from django.test import AsyncClient, override_settings
from django.utils import timezone
from moto.server import ThreadedMotoServer
from rest_framework.test import APIClient

from agents.engines import ChatMessage, TurnContext
from agents.engines.builtin import plain_answer
from agents.models import Agent
from conversations.models import Conversation, Message, MessageStatus
from core.tenancy import owner_scope_enter
from tenants.models import ApiKey, Tenant
from tenants.services import api_key_create, tenant_create
from tests.servers import free_port
from turns.services import new_run_id


@dataclass
class TenantContext:
    tenant: Tenant
    key: ApiKey
    secret: str
    agent: Agent
    client: APIClient

    @property
    def base(self) -> str:
        return f"/tenants/{self.tenant.id}/api/v2"

    @property
    def agent_url(self) -> str:
        return f"{self.base}/agents/{self.agent.id}"

    def conversation(self, name: str = "Chat", agent: Agent | None = None) -> Conversation:
        agent = agent or self.agent
        return Conversation.objects.create(tenant=self.tenant, agent=agent, name=name)

    def conversation_url(self, conversation: Conversation) -> str:
        return f"{self.base}/agents/{conversation.agent_id}/conversations/{conversation.id}"


def _deadline(timeout: float, since: float | None) -> float:
    return (time.monotonic() if since is None else since) + timeout


def _timed_out(what: str | Callable, timeout: float, since: float | None, last) -> None:
    name = what if isinstance(what, str) else getattr(what, "__name__", repr(what))
    start = "" if since is None else " (counted from `since`)"
    pytest.fail(f"timed out after {timeout} s{start} waiting for {name}; last value: {last!r}")


def wait_until(
    predicate: Callable, *, timeout: float = 10, interval: float = 0.05, since: float | None = None, what: str = ""
):
    """Poll `predicate()` until it returns a truthy value, and return that value; fail the test if it has not
    by `timeout` seconds after `since` (a time.monotonic(), default now). Replaces fixed sleeps: a test waits
    only as long as the behaviour takes, and a deadline still fails it when the behaviour breaks."""
    deadline = _deadline(timeout, since)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            _timed_out(what or predicate, timeout, since, value)
        time.sleep(interval)


async def await_until(
    predicate: Callable, *, timeout: float = 10, interval: float = 0.01, since: float | None = None, what: str = ""
):
    """`wait_until` for async tests: `predicate()` may return an awaitable (e.g. a queryset's `aexists()`)."""
    deadline = _deadline(timeout, since)
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            _timed_out(what or predicate, timeout, since, value)
        await asyncio.sleep(interval)


def make_tenant(tenant_id: str) -> TenantContext:
    tenant = tenant_create(tenant_id=tenant_id, name=tenant_id.title())
    key, secret = api_key_create(tenant=tenant, name="tests")
    agent = Agent.objects.create(tenant=tenant, name=f"{tenant_id} agent", system_prompt="You are helpful.")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return TenantContext(tenant=tenant, key=key, secret=secret, agent=agent, client=client)


@pytest.fixture(scope="session", autouse=True)
def _end_stray_connections(django_db_setup, django_db_blocker):
    """Generations use worker threads (and some tests, server processes) with their own connections;
    end them before pytest-django drops the test database, which would otherwise fail."""
    yield
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(autouse=True)
def _unscoped():
    """Each test's own queries run as the owner (every tenant's rows). A server gives each request its own
    context, whose tenant scope goes with it; a test that calls a view directly (a request factory) runs
    the view in the test's context, where authentication's scope would otherwise stay."""
    owner_scope_enter()
    yield
    owner_scope_enter()


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()  # throttle counters must not leak between tests
    yield
    cache.clear()


# No `db` argument: the test's django_db marker decides, so transactional tests get committed rows
# that server threads and processes can see.
@pytest.fixture(scope="session", autouse=True)
def _writes_under_a_temporary_directory(tmp_path_factory):
    """No test writes into the developer's var/: stored files, data frames and the stream journal go to a
    temporary directory, in this process and in the servers tests start (they inherit the environment)."""
    root = tmp_path_factory.mktemp("var")
    os.environ["MEDIA_ROOT"], os.environ["PARLEY_VAR_DIR"] = str(root / "media"), str(root)
    with override_settings(MEDIA_ROOT=root / "media", VAR_DIR=root):
        yield root


@pytest.fixture
def slow_agent(owner) -> TenantContext:
    """The owner, whose agent streams a chunk every 15 ms: a reply lasts about 1.5 s, long enough to act on
    while it runs."""
    owner.agent.options = {"chunk_delay_ms": 15}
    owner.agent.save()
    return owner


@pytest.fixture
def owner() -> TenantContext:
    return make_tenant("acme")


@pytest.fixture
def outsider() -> TenantContext:
    return make_tenant("globex")


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


class KeyedAsyncClient(AsyncClient):
    """AsyncClient sending the key on every request (constructor-level headers get ASGI names wrong)."""

    def __init__(self, secret: str):
        super().__init__()
        self.auth = {"Authorization": f"Bearer {secret}"}

    def generic(self, *args, headers=None, **kwargs):
        return super().generic(*args, headers={**self.auth, **(headers or {})}, **kwargs)


def reply_in_progress(ctx: TenantContext, content: str = "", *, heartbeat_age=timedelta(minutes=10), **fields):
    """An in-progress reply, current in a new conversation, whose last heartbeat is `heartbeat_age` old (by
    default its process died long ago)."""
    conversation = ctx.conversation()
    user = Message.objects.create(tenant=ctx.tenant, conversation=conversation, role="user", content="q")
    reply = Message.objects.create(
        tenant=ctx.tenant,
        conversation=conversation,
        parent=user,
        role="assistant",
        content=content,
        status=MessageStatus.IN_PROGRESS,
        heartbeat_at=timezone.now() - heartbeat_age,
        **{"run_id": new_run_id(), **fields},
    )
    conversation.current_message = reply
    conversation.save(update_fields=["current_message"])
    return reply


def uninterrupted_text(question: str) -> str:
    """The builtin engine's plain answer to `question`, as one run without interruption streams it."""
    context = TurnContext(tenant_id="t", conversation_id=None, message_id=None, system_prompt="", history=[])
    return plain_answer(dataclasses.replace(context, history=[ChatMessage("user", question)])).text


def async_client(ctx: TenantContext) -> AsyncClient:
    return KeyedAsyncClient(ctx.secret)


@pytest.fixture
def s3(settings):
    """Storage on moto's S3 server (a real HTTP endpoint), started for the test."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    options = {"endpoint_url": endpoint, "aws_access_key_id": "test", "aws_secret_access_key": "test"}
    client = boto3.client("s3", region_name="us-east-1", **options)
    client.create_bucket(Bucket="parley-test")
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": "parley-test",
                "endpoint_url": endpoint,
                "access_key": "test",
                "secret_key": "test",
                "region_name": "us-east-1",
                "default_acl": None,
                "file_overwrite": False,
                "querystring_auth": True,
                "querystring_expire": 900,
            },
        },
    }
    yield client
    httpx.post(f"{endpoint}/moto-api/reset")  # moto keeps its buckets in the process, across servers
    server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under .ci/run (PARLEY_NO_SKIPS=1) every real part is there: a test that skips fails instead."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("PARLEY_NO_SKIPS") and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under .ci/run, where nothing may be: {report.longrepr}"
