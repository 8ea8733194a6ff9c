"""`python -m server.tools.bench`: load-test every RPC of the real server with h2load and set each
result against two limits measured in the same run (the service's own SQL replayed with
asyncpg, and an empty RPC on a bare grpc.aio server); writes BENCHMARKS.md and benchmarks.png."""
