"""Influgen's Python SDK: `influgen.client.Client`, an async client for the HTTP API."""
