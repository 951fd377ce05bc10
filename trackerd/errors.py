"""The root of trackerd's own exceptions.

``except TrackerdError`` catches every error trackerd raises on purpose (a bad setting, a source
that will not open, a malformed message...) and nothing else: a bug still surfaces as itself.
Subclasses keep a builtin second base where callers rely on it (``SettingsError`` is a
``ValueError``, ``CascadeError`` a ``RuntimeError``).
"""

from __future__ import annotations


class TrackerdError(Exception):
    """Base class of every exception trackerd defines."""
