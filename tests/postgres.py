"""Test support: a real PostgreSQL server the tests start and stop themselves (one per
session, a fresh database per test: see ``conftest.py``). The server is
:mod:`bench.pgserver`'s, which ``make bench`` also uses."""

from bench.pgserver import PostgresServer, postgres_server

__all__ = ["PostgresServer", "postgres_server"]
