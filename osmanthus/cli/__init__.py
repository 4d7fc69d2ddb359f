"""The `osmanthus` command: one entry point with a subcommand group for each operator task."""

from osmanthus.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
