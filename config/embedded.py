"""Embedded services for a machine with nothing configured: PostgreSQL from the pgserver package."""

from __future__ import annotations

import secrets
from pathlib import Path


def embedded_database(data_dir: Path) -> dict:
    """Start (or reuse) a PostgreSQL server in `data_dir` and return Django DATABASES settings for it."""
    import logging
    import warnings

    logging.getLogger("pgserver").setLevel(logging.WARNING)  # it logs every process exit at INFO
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None leaves the server running, so later commands and runs reuse it.
    server = pgserver.get_server(data_dir, cleanup_mode=None)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "postgres",
        "USER": "postgres",
        "HOST": str(server.pgdata),  # the Unix socket lives in the data folder
        "PORT": "",
    }


def embedded_database_stop(data_dir: Path) -> bool:
    """Stop the PostgreSQL server of `data_dir` if one runs (`make stop`); True if it did. As root, pgserver
    runs it as its own system user, and stops it as that user too."""
    import os
    import warnings

    if not (data_dir / "postmaster.pid").exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pgserver

    pgserver.pg_ctl(["-w", "stop"], pgdata=data_dir, user="pgserver" if os.geteuid() == 0 else None)
    return True


def local_secret_key(path: Path) -> str:
    """A per-checkout secret for runs without SECRET_KEY, created once and kept private."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    path.touch(mode=0o600)
    path.write_text(key)
    return key


if __name__ == "__main__":  # python -m config.embedded stop DATA_DIR (no Django: that would start it first)
    import sys

    if sys.argv[1:2] != ["stop"] or len(sys.argv) != 3:
        sys.exit("usage: python -m config.embedded stop DATA_DIR")
    stopped = embedded_database_stop(Path(sys.argv[2]))
    print(f"PostgreSQL in {sys.argv[2]}: {'stopped' if stopped else 'not running'}")
