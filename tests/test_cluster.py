"""Never losing a reply, with real processes: deploy/nginx.conf in front of two uvicorn processes sharing
Redis, PostgreSQL and moto's S3 server; one process is stopped (SIGTERM: it drains and hands over) or
killed (kill -9: the other takes its replies over) while 20 streams run through nginx. Each client
reconnects as an SSE client does (Last-Event-ID) and must get every delta exactly once and the end; every
reply is stored with the text that was streamed. The same with one process and no Redis, restarted on the
same database."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from moto.server import ThreadedMotoServer

from conversations.models import Message, MessageStatus
from tests.conftest import TenantContext, wait_until
from tests.servers import BASE_DIR, Server, env_of_tests, free_port, parse_sse, serve
from tests.test_takeover import uninterrupted_text

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
STREAMS = 20
QUESTION = " ".join("abcdefghij"[i % 10] for i in range(95))  # a reply of ~110 one-word chunks
DELAY_MS = 40  # ~4.5 s a reply: it outlives the drain (1 s) and is cut mid-way by a kill
STALE_SECONDS = 10  # the default: the figures are for it


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("two processes share their replies through Redis: needs REDIS_URL (set by .ci/run)")
    return url


@pytest.fixture
def s3_env() -> Iterator[dict[str, str]]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    httpx.put(f"{endpoint}/parley-cluster")  # the bucket
    yield {
        "S3_BUCKET": "parley-cluster",
        "S3_ENDPOINT_URL": endpoint,
        "S3_ACCESS_KEY_ID": "test",
        "S3_SECRET_ACCESS_KEY": "test",
        "S3_REGION": "us-east-1",
    }
    httpx.post(f"{endpoint}/moto-api/reset")
    server.stop()


@contextlib.contextmanager
def nginx_in_front(ports: list[int]) -> Iterator[str]:
    """deploy/nginx.conf as shipped, on a free port, with an upstream of `ports`; yields its URL."""
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light; .ci/run installs it)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="parley-nginx-") as directory:
        root = Path(directory)
        for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (root / name).mkdir()
            (root / name).chmod(0o777)
        upstream = (BASE_DIR / "deploy" / "nginx-upstream.conf").read_text()
        upstream = re.sub(r"server 127\.0\.0\.1:\d+;\n", "", upstream)
        servers = "".join(f"    server 127.0.0.1:{p};\n" for p in ports)
        (root / "upstream.conf").write_text(upstream.replace("    keepalive", servers + "    keepalive", 1))
        site = (BASE_DIR / "deploy" / "nginx.conf").read_text()
        site = site.replace("/etc/nginx/parley-upstream.conf", str(root / "upstream.conf"))
        site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
        temp_paths = "".join(
            f"    {kind}_temp_path {root / name};\n"
            for kind, name in [("client_body", "body"), ("proxy", "proxy"), ("fastcgi", "fastcgi")]
            + [("uwsgi", "uwsgi"), ("scgi", "scgi")]
        )
        (root / "nginx.conf").write_text(
            f"daemon off;\nworker_processes 1;\npid {root / 'nginx.pid'};\nerror_log {root / 'error.log'} warn;\n"
            f"events {{ worker_connections 1024; }}\n"
            f"http {{\n    access_log off;\n{temp_paths}{site}\n}}\n"
        )
        process = subprocess.Popen([NGINX, "-c", str(root / "nginx.conf"), "-p", str(root)], stderr=subprocess.PIPE)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: _answers(url), timeout=10, what="nginx")
            yield url
        finally:
            process.terminate()
            process.wait(10)


def _answers(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=1)
        return True
    except httpx.TransportError:
        return False


@contextlib.contextmanager
def parley(port: int, env: dict[str, str | None], log_dir: Path) -> Iterator[Server]:
    log = log_dir / f"parley-{port}-{time.monotonic_ns()}.log"
    with serve("uvicorn", env=env_of_tests(**env), port=port, log_path=log, timeout=60) as server:
        yield server


@dataclass
class Client:
    """An SSE client of one reply: it reconnects with Last-Event-ID until the stream ends with done or an
    error, keeping every event it received."""

    base: str
    ctx: TenantContext
    conversation_url: str
    received: list[tuple[int, dict]] = field(default_factory=list)
    message_id: str = ""
    reconnects: int = 0
    ended_at: float | None = None
    failure: str = ""

    def run(self, deadline: float) -> None:
        try:
            self._run(deadline)
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"

    def _take(self, entries: list[dict]) -> bool:
        """Keep the events; True at the end of the reply."""
        for entry in entries:
            if "data" not in entry or "id" not in entry:  # a keep-alive, or the instruction to reconnect
                continue
            message_id, _, seq = entry["id"].rpartition(":")
            self.message_id = message_id
            self.received.append((int(seq), entry["data"]))
            if "done" in entry["data"] or "error" in entry["data"]:
                self.ended_at = time.time()
                return True
        return False

    def _run(self, deadline: float) -> None:
        url = f"{self.base}{self.conversation_url}"
        auth = {"Authorization": f"Bearer {self.ctx.secret}"}
        request = ("POST", f"{url}/stream", {"json": {"content": QUESTION}, "headers": auth})
        while time.monotonic() < deadline:
            method, target, options = request
            try:
                with httpx.stream(method, target, timeout=30, **options) as response:
                    if response.status_code != 200:  # no process to answer yet (restarting)
                        time.sleep(0.2)
                        continue
                    buffer = b""
                    for chunk in response.iter_bytes():
                        buffer += chunk
                        cut = buffer.rfind(b"\n\n") + 2
                        if cut > 1:  # complete events, as they come
                            if self._take(parse_sse(buffer[:cut])):
                                return
                            buffer = buffer[cut:]
            except httpx.TransportError:  # the process died mid-stream, or is not up yet
                time.sleep(0.2)
            if not self.message_id:  # no turn yet: post it again
                continue
            self.reconnects += 1
            last = f"{self.message_id}:{self.received[-1][0]}"
            request = ("GET", f"{url}/messages/{self.message_id}/stream", {"headers": {**auth, "Last-Event-ID": last}})
            time.sleep(0.1)
        raise AssertionError("no end before the deadline")


def start_clients(
    base: str, ctx: TenantContext, count: int, seconds: float
) -> tuple[list[Client], list[threading.Thread]]:
    deadline = time.monotonic() + seconds
    clients = [Client(base, ctx, ctx.conversation_url(ctx.conversation())) for _ in range(count)]
    threads = [threading.Thread(target=client.run, args=(deadline,), daemon=True) for client in clients]
    for thread in threads:
        thread.start()
    return clients, threads


def wait_streaming(clients: list[Client]) -> None:
    wait_until(lambda: all(len(c.received) >= 5 for c in clients), timeout=30, what="every stream under way")


def check_exact(clients: list[Client], *, status: str) -> None:
    """Every delta exactly once (ids only go up), the end, and the stored reply equal to what was streamed."""
    for client in clients:
        assert not client.failure, client.failure
        seqs = [seq for seq, _ in client.received]
        assert seqs == sorted(set(seqs)), f"repeated or out-of-order ids: {seqs}"
        stored = Message.objects.get(pk=client.message_id)
        assert stored.status == status, (stored.status, stored.error)
        streamed = "".join(event.get("content", "") for _, event in client.received)
        assert stored.content == streamed
        if status == MessageStatus.COMPLETED:  # continued or not, the builtin engine's whole answer
            assert stored.content == uninterrupted_text(QUESTION)
    assert not Message.objects.filter(status=MessageStatus.IN_PROGRESS).exists()


def agent_for(ctx: TenantContext, **options) -> TenantContext:
    ctx.agent.options = {"chunk_delay_ms": DELAY_MS, **options}
    ctx.agent.save()
    return ctx


def accepts_a_new_message(base: str, ctx: TenantContext, clients: list[Client]) -> None:
    ctx.agent.options = {}  # (answers at once)
    ctx.agent.save()
    for client in clients:
        response = httpx.post(
            f"{base}{client.conversation_url}/messages",
            json={"content": "and now?"},
            headers={"Authorization": f"Bearer {ctx.secret}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text


@pytest.fixture
def logs(tmp_path) -> Path:
    return tmp_path


def cluster_env(redis_url: str, s3_env: dict[str, str]) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "DRAIN_SECONDS": "1", **s3_env}


def test_sigterm_drains_and_hands_over_and_every_client_gets_every_delta_once(owner, redis_url, s3_env, logs):
    ctx, env = agent_for(owner), cluster_env(redis_url, s3_env)
    ports = [free_port(), free_port()]
    with parley(ports[0], env, logs) as first, parley(ports[1], env, logs), nginx_in_front(ports) as base:
        clients, threads = start_clients(base, ctx, STREAMS, seconds=90)
        wait_streaming(clients)

        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(30) in (0, -signal.SIGTERM)  # drained and gone well inside its grace
        for thread in threads:
            thread.join(90)

        check_exact(clients, status=MessageStatus.COMPLETED)
        cut = sum(1 for client in clients if client.reconnects)
        print(f"SIGTERM: {cut} streams ended by the drain and resumed elsewhere, none lost a delta")
        assert cut  # the stopped process's streams came back
        accepts_a_new_message(base, ctx, clients)


@pytest.mark.parametrize("on_crash", ["continue", "fail"])
def test_kill_9_the_other_process_takes_the_replies_over(owner, redis_url, s3_env, logs, on_crash):
    ctx, env = agent_for(owner, on_crash=on_crash), cluster_env(redis_url, s3_env)
    ports = [free_port(), free_port()]
    with parley(ports[0], env, logs) as first, parley(ports[1], env, logs), nginx_in_front(ports) as base:
        clients, threads = start_clients(base, ctx, STREAMS, seconds=90)
        wait_streaming(clients)

        runs = dict(Message.objects.filter(id__in=[c.message_id for c in clients]).values_list("id", "run_id"))
        first.process.kill()
        killed_at = time.time()
        first.process.wait(10)
        # Every reply is settled (ended, or failed by a sweep) or resumed (another run owns it) within the
        # stale limit and one sweep interval (a quarter of it), from the kill.
        wait_until(lambda: _settled_or_resumed(runs), timeout=STALE_SECONDS + 5, what="every reply taken over")
        taken_over = time.time() - killed_at
        for thread in threads:
            thread.join(90)

        cut = sum(1 for client in clients if client.reconnects)
        print(f"kill -9 ({on_crash}): every reply settled or resumed {taken_over:.1f} s after; {cut} streams cut")
        if on_crash == "continue":
            check_exact(clients, status=MessageStatus.COMPLETED)
        else:
            check_exact([c for c in clients if _status(c) == "completed"], status=MessageStatus.COMPLETED)
            cut = [c for c in clients if _status(c) == "failed"]
            assert cut, "some replies ran on the killed process"
            check_exact(cut, status=MessageStatus.FAILED)
            for client in cut:  # followers learnt of the failure within 2 s of the sweep storing it
                completed_at = Message.objects.get(pk=client.message_id).completed_at.timestamp()
                assert client.ended_at - completed_at <= 2.0
        accepts_a_new_message(base, ctx, clients)


def _settled_or_resumed(runs: dict[str, str]) -> bool:
    now = Message.objects.filter(id__in=list(runs)).values_list("id", "status", "run_id")
    return all(status != MessageStatus.IN_PROGRESS or run_id != runs[message_id] for message_id, status, run_id in now)


def _status(client: Client) -> str:
    return Message.objects.get(pk=client.message_id).status


@pytest.mark.parametrize("stop", ["sigterm", "kill"])
def test_one_process_without_redis_continues_its_replies_when_it_starts_again(owner, logs, stop):
    """No Redis: one process. Its replies survive its restart on the same database: handed over by the drain
    (or found running by the next start after a kill -9, with what it streamed read from its journal) and
    continued at once."""
    ctx, env = agent_for(owner), {"REDIS_URL": ""}
    port = free_port()
    with parley(port, env, logs) as only:
        base = only.url
        clients, threads = start_clients(base, ctx, 10, seconds=90)
        wait_streaming(clients)
        stopped_at = time.time()
        if stop == "sigterm":
            only.process.send_signal(signal.SIGTERM)
        else:
            only.process.kill()
        only.process.wait(30)
    with parley(port, env, logs):
        for thread in threads:
            thread.join(60)
        ended = max(client.ended_at for client in clients if client.ended_at) - stopped_at
        print(f"one process, {stop}: every reply continued and ended {ended:.1f} s after the stop")
        # After a kill -9 too: what it streamed is in its journal on disk (turns.log.journal).
        check_exact(clients, status=MessageStatus.COMPLETED)
        accepts_a_new_message(base, ctx, clients)


def test_nginx_answers_its_own_errors_in_the_json_shape_and_passes_the_port(owner, logs):
    with nginx_in_front([free_port()]) as base:  # no process behind it
        down = httpx.get(f"{base}/healthz")
        too_large = httpx.post(f"{base}/v1/conversation", content=b"x" * (5 << 20))  # over its 4 MiB
    assert down.status_code == 502 and down.headers["content-type"] == "application/json"
    assert down.json()["error"]["code"] == "unavailable"
    assert too_large.status_code == 413 and too_large.json()["error"]["code"] == "payload_too_large"

    port = free_port()
    with parley(port, {"REDIS_URL": ""}, logs), nginx_in_front([port]) as base:
        conversation_url = f"{base}{owner.conversation_url(owner.conversation())}"
        auth = {"Authorization": f"Bearer {owner.secret}"}
        uploaded = httpx.post(f"{conversation_url}/files", files={"files": ("a.txt", b"hello")}, headers=auth)
        file_ref = uploaded.json()["items"][0]["file_ref"]
        preview = httpx.get(f"{conversation_url}/related-documents/{file_ref}/preview", headers=auth)
        # An absolute link names nginx's address with its port (Host: $http_host), and works.
        assert preview.status_code == 200, preview.text
        assert preview.json()["url"].startswith(f"{base}/")
        assert httpx.get(preview.json()["url"]).content == b"hello"
