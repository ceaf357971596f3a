"""Secrets out of everything sent to a model.

Command lines are root's too: `mysql -pS3cret`, `curl -u admin:pw`,
`--password=...`, `API_TOKEN=... ./job`, `https://user:pw@host/`. Whatever
a backend is (a cloud API, or an endpoint someone else controls), it gets
the command line with such values replaced by REDACTED. What is kept is
the shape (which flag, which tool, which host), which is what judging a
connection needs.

Deliberately over-eager: a false positive costs the model a detail, a
false negative hands a password to a third party.
"""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"

# Option or variable names that carry secrets.
_SECRET_NAME = r"(?:pass(?:word|wd|phrase)?|pwd|secret|token|api[-_]?key|apikey|access[-_]?key|" \
               r"private[-_]?key|key|auth(?:orization)?|credentials?|cookie|session|signature|sig)"
_NAME_RE = re.compile(rf"(?i)(?:^|[-_.]){_SECRET_NAME}(?:$|[-_.])|{_SECRET_NAME}$")

# --password=x, -password=x, password=x, API_TOKEN=x, ?token=x&...
_ASSIGN = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_.-]{0,63})=(?P<value>[^\s&;]+)")
_ENV_NAME = re.compile(r"_*[A-Z][A-Z0-9_]*")
# --password x (the secret is the next word)
_FLAG_NEXT = re.compile(rf"(?i)(?P<flag>--?[A-Za-z0-9_.-]*{_SECRET_NAME}[A-Za-z0-9_.-]*)"
                        r"(?P<sep>\s+)(?P<value>(?!-)[^\s]+)")
# scheme://user:password@host
_URL_CRED = re.compile(r"(?P<pre>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)(?P<value>[^@\s/]+)(?=@)")
# Authorization: Bearer xyz / Basic xyz / token xyz
_BEARER = re.compile(r"(?i)\b(?P<pre>(?:bearer|basic|token)\s+)(?P<value>[A-Za-z0-9._~+/=-]{8,})")
# Well-known token shapes, wherever they appear.
_TOKENS = re.compile(r"\b(?:sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
                     r"|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|glpat-[A-Za-z0-9_-]{16,}"
                     r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})")

# Tools whose short options take a password: tool -> (option letters,
# attached value allowed). mysql -pSECRET, sshpass -p SECRET, redis-cli -a SECRET.
_TOOL_SHORT = {
    "mysql": "p", "mysqldump": "p", "mysqladmin": "p", "mariadb": "p", "mariadb-dump": "p",
    "mysqlimport": "p", "mysqlshow": "p", "sshpass": "p", "redis-cli": "a", "keydb-cli": "a",
    "smbclient": "U", "rpcclient": "U", "ldapsearch": "w", "ldapmodify": "w", "ldapadd": "w",
    "htpasswd": "b", "openssl": "k", "zip": "P", "unzip": "P", "7z": "p",
    "curl": "u", "xfreerdp": "p",
}
# -u user:password (curl), -U user%password (smbclient): only after the separator.
_USER_PASS = {"u": ":", "U": "%"}


def _assign(m: re.Match) -> str:
    name = m.group("name")
    # NAME=value in the environment style: any upper-case name, secret or
    # not (DATABASE_URL, AWS_SECRET_ACCESS_KEY, PGPASSWORD, ...).
    if _ENV_NAME.fullmatch(name) or _NAME_RE.search(name):
        return f"{name}={REDACTED}"
    return m.group(0)


def _tool_args(words: list[str]) -> list[str]:
    """Per-tool short options (-p SECRET, -pSECRET, -u user:SECRET)."""
    out: list[str] = []
    letters = ""
    redact_next: str | None = None
    for w in words:
        base = w.rsplit("/", 1)[-1]
        if base in _TOOL_SHORT:
            letters = _TOOL_SHORT[base]
            out.append(w)
            redact_next = None
            continue
        if redact_next is not None:
            out.append(_user_pass(w, redact_next))
            redact_next = None
            continue
        if letters and len(w) >= 2 and w[0] == "-" and w[1] in letters:
            if len(w) == 2:
                redact_next = w[1]
                out.append(w)
            else:
                out.append(w[:2] + _user_pass(w[2:], w[1]))
            continue
        out.append(w)
    return out


def _user_pass(value: str, letter: str) -> str:
    sep = _USER_PASS.get(letter)
    if sep is None:
        return REDACTED
    user, found, _ = value.partition(sep)
    return f"{user}{sep}{REDACTED}" if found else value


def redact(text: str | None) -> str | None:
    """text with secret-looking values replaced by REDACTED."""
    if not text:
        return text
    text = _URL_CRED.sub(lambda m: m.group("pre") + REDACTED, text)
    text = _BEARER.sub(lambda m: m.group("pre") + REDACTED, text)
    text = _TOKENS.sub(REDACTED, text)
    text = _FLAG_NEXT.sub(lambda m: f"{m.group('flag')}{m.group('sep')}{REDACTED}"
                          if "=" not in m.group("flag") else m.group(0), text)
    text = _ASSIGN.sub(_assign, text)
    if any(tool in text for tool in _TOOL_SHORT):
        # Split on single spaces so that the text's own spacing survives.
        text = " ".join(_tool_args(text.split(" ")))
    return text


def redact_value(value):
    """redact over every string in a JSON-like value."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    return value
