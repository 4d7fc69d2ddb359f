"""The errors of credit reports: refused as malformed, as drawn by another version, as altered."""

from __future__ import annotations

from osmanthus.core.errors import CryptoError, InvalidArgument, OsmanthusError
from osmanthus.core.signing import LegacyFormat


class ReportError(OsmanthusError):
    """A report was refused; the subclass says whether it is malformed or not genuine."""


class MalformedReport(ReportError, InvalidArgument):
    """The file is not a report this version can check (no embedded content, wrong format, bad
    fields, unreadable)."""


class RendererMismatch(MalformedReport):
    """The report's signature verifies, but it was drawn by another version of the renderer and
    the file differs from what this version draws: only the version that issued it can tell
    whether the file was altered. `field` is "renderer" or "format"."""


class TamperedReport(ReportError, CryptoError):
    """The report is not what its issuer signed: the signature, the key or the verification
    code does not match the signed content, or the file is not exactly what the signed report
    renders to. `field` says which."""

    # a refusal, like a consent receipt with a bad signature: the input is well-formed
    exit_code = 4


class UnprintableReport(ReportError, InvalidArgument):
    """The report cannot be drawn in this format: a PDF report has a character its embedded
    fonts have no glyph for (it would print as an empty box), or the file would be larger than
    a verifier reads. The HTML page, which the reader's own fonts draw, may still be written."""


class LegacyReport(MalformedReport, LegacyFormat):
    """A report signed in the format before the one envelope (a raw Ed25519 signature and a
    16-hex key id): this version no longer verifies it; the message says how to have it issued
    again. A MalformedReport and a signing.LegacyFormat."""
