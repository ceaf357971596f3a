"""Asking the configured model for filter rules against recent floods (the
Filter rules page's "Propose rules"). One path for the dashboard run as root
and for the analyzer, which runs it for the unprivileged dashboard with
root's settings and API keys (analyzer/dashcmds.py, kind "propose"). What
comes back is only a proposal: a person approves it, rule by rule validated
(proposals.py)."""

from __future__ import annotations

from .. import proposals
from ..errors import InputError
from .config import LLM_BACKENDS


def ask_for_rules(store, cfg: dict, flows: list[dict], *, protected, ssh_ports, trigger: dict) -> dict:
    """The new pending proposal; InputError (one line) when there is nothing
    to ask about, no model, or no usable answer."""
    from .backends import BackendError, BackendManager
    from .probe import choose_auto
    if not flows:
        raise InputError("No flood evidence in the analyzer's recent events to base rules on.")
    backend = cfg["backend"]
    if backend == "auto":
        backend, why = choose_auto(cfg)
        if backend not in LLM_BACKENDS:
            raise InputError(f"No LLM is reachable ({why}); choose one on the LLM settings page.")
    elif backend not in LLM_BACKENDS:
        raise InputError("The analyzer runs on rules only; choose an LLM on the LLM settings page.")
    cfg = dict(cfg, backend=backend)
    try:
        llm = BackendManager(lambda m: None).get(cfg)
        return proposals.propose(store, lambda msgs, schema: llm.ask_json(msgs, cfg, schema), flows,
                                 backend=llm.describe(), protected=protected, ssh_ports=ssh_ports,
                                 trigger=trigger)
    except BackendError as e:
        raise InputError(f"The LLM did not answer: {e}") from None
    except proposals.ProposalError as e:
        raise InputError(f"The LLM's answer was unusable: {e}") from None


def summary(p: dict) -> str:
    valid = sum(bool(r.get("valid")) for r in p["rules"])
    return f"Proposal {p['id']}: {valid} valid rule(s) of {len(p['rules'])}, waiting for review"
