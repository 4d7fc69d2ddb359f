"""Embedded default catalogue, department rule files and policies."""
