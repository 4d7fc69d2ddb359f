"""The Osmanthus core: what every party shares, and nothing that belongs to one of them.

Errors, identifiers, Paillier crypto, encodings, the catalogue and its rules, Cedar policy,
tokens, mutual TLS, audit, signed artefacts and the wire contract (`osmanthus.core.wire`).
Nothing here imports a service package (node, coordinator, province, syncjob), the SDK, the CA
tooling or an application (the CLI, the demo): the import contracts in pyproject.toml
(`[tool.importlinter]`) fail CI on any such import.
"""
