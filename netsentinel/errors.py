"""The one exception family: every error NetSentinel raises on purpose is a
NetSentinelError whose str() is one line a person can act on. Catch this
(not ValueError) to report a refusal and carry on."""

from __future__ import annotations


class NetSentinelError(Exception):
    """A refusal or failure NetSentinel explains in one line."""


class InvalidAnswer(NetSentinelError, ValueError):
    """A model's answer that is not the JSON object that was asked for."""


class DecisionError(NetSentinelError):
    """A decision on a reviewed item (a pending threat, a rule proposal) that
    cannot be made: unknown id, already decided, nothing to approve."""
