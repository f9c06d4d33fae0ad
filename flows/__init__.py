"""Prefect flows that wire tasks/ and storage/ together, and the `cas` command."""
