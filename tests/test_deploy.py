import os
import re
import subprocess
import sys

import yaml

from tests.servers import BASE_DIR, database_url_of_tests

PRODUCTION = {
    "SECRET_KEY": "x" * 20 + "a-long-random-production-secret-key-0123456789",
    "ALLOWED_HOSTS": "parley.example.com",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_COOKIES": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
}


def test_check_deploy_is_clean_with_production_settings(db):
    env = {**os.environ, "DATABASE_URL": database_url_of_tests(), **PRODUCTION}
    env.pop("DEBUG", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_the_stop_timeouts_leave_the_drain_its_time():
    """DRAIN_SECONDS (60) < uvicorn's graceful-shutdown timeout < the supervisor's kill, in every layout, so
    that a stop hands running replies over instead of cutting them."""
    drain = 60
    compose = yaml.safe_load((BASE_DIR / "deploy" / "compose.yaml").read_text())
    dockerfile = (BASE_DIR / "deploy" / "Dockerfile").read_text()
    unit = (BASE_DIR / "deploy" / "parley@.service").read_text()
    grace = int(re.search(r'"--timeout-graceful-shutdown", "(\d+)"', dockerfile).group(1))
    # (and WebSocket frames uncompressed everywhere: deflate's state costs each open socket about 40 KB)
    readme, makefile = (BASE_DIR / "README.md").read_text(), (BASE_DIR / "Makefile").read_text()
    assert '"--ws-per-message-deflate", "false"' in dockerfile
    assert all("--ws-per-message-deflate false" in text for text in (unit, readme, makefile))
    assert drain < grace == int(re.search(r"--timeout-graceful-shutdown (\d+)", unit).group(1))
    assert grace < int(re.search(r"TimeoutStopSec=(\d+)", unit).group(1))
    for name in ("parley-1", "parley-2"):
        service = compose["services"][name]
        assert grace < int(service["stop_grace_period"].rstrip("s"))
        assert service["environment"]["DRAIN_SECONDS"] == "${DRAIN_SECONDS:-60}"


def test_compose_runs_each_container_on_its_own_network_with_health_checks():
    compose = yaml.safe_load((BASE_DIR / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    # Over TCP: pg_isready on the socket answers during PostgreSQL's first, socket-only start.
    assert "-h 127.0.0.1" in services["postgres"]["healthcheck"]["test"][1]
    for name in ("parley-1", "parley-2"):
        assert "network_mode" not in services[name]  # an nginx restart would leave them without a network
        assert "/healthz" in " ".join(services[name]["healthcheck"]["test"])
        assert services[name]["environment"]["DB_POOL_MAX_SIZE"]
    # The tenant command of its header runs `manage.py create_tenant` in the migrate service.
    assert "run --rm migrate create_tenant acme" in (BASE_DIR / "deploy" / "compose.yaml").read_text()
    assert services["migrate"]["entrypoint"] == ["python", "manage.py"]
    upstream = (BASE_DIR / "deploy" / "nginx-upstream-compose.conf").read_text()
    assert "server parley-1:8000 resolve;" in upstream and "server parley-2:8000 resolve;" in upstream
