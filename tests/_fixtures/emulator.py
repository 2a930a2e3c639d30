"""Pytest fixtures that start the connector emulator on a free loopback port."""
