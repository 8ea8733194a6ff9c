"""The test suite (tests/unit: pure logic; tests/integration: a real PostgreSQL and server)."""

import os

# Before anything imports grpc: its fork handlers crash a child forked from a process with
# live gRPC threads (seen as pg_ctl dying of SIGSEGV when the tests restart PostgreSQL), and
# subprocess forks when it must switch users. The server sets the same (server.__main__).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
