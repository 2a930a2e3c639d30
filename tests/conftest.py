"""Shared fixtures live in ``tests/_fixtures`` (one module per real part we start)."""

pytest_plugins = [
    "tests._fixtures.emulator",
    "tests._fixtures.receiver",
    "tests._fixtures.redis",
    "tests._fixtures.sentinel",
]
