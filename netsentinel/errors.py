"""The one exception family: every error NetSentinel raises on purpose is a
NetSentinelError whose str() is one line a person can act on. Catch this
(not ValueError) to report a refusal and carry on.

Defined here: the errors several modules share. The others live beside the
code that raises them and derive from NetSentinelError too:
  addresses.AddressError, bancheck.BanRefused, filterrules.RuleRefused,
  proposals.ProposalError, store.StoreError (LockTimeout, CorruptFile),
  analyzer.verdict.InvalidVerdict, analyzer.eventcheck.BadLine,
  analyzer.rules.RuleFileError, llm.backends.BackendError, kernel.KernelError.
Refusals of input keep ValueError as a second base (RuntimeError for the
kernel), so code written against the standard types still works.
"""

from __future__ import annotations


class NetSentinelError(Exception):
    """A refusal or failure NetSentinel explains in one line."""


class ConfigError(NetSentinelError, ValueError):
    """A settings or whitelist file, or one value in it, that does not validate."""


class InputError(NetSentinelError, ValueError):
    """What a person typed or picked cannot be used (the dashboard's forms)."""


class InvalidAnswer(NetSentinelError, ValueError):
    """A model's answer that is not the JSON object that was asked for."""


class DecisionError(NetSentinelError):
    """A decision on a reviewed item (a pending threat, a rule proposal) that
    cannot be made: unknown id, already decided, nothing to approve."""
