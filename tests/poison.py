"""Command-file texts that used to crash the loader (issue 10), shared by the
queue tests and the kernel tests. Each must be refused once, with a reason."""

DEEP = "[" * 100_000 + "]" * 100_000
BAN = '[{"action": "ban", "ip": "203.0.113.9", %s}]'
RULE = '[{"action": "add_rule", "rule": {"id": "%s", "action": "drop", "proto": "udp", "sport": 9%s}}]'

# Refused as a whole file (not JSON a command may hold).
UNPARSEABLE_BANS = [
    BAN % '"ttl_seconds": NaN',
    BAN % '"ttl_seconds": Infinity',
    BAN % '"ttl_seconds": 1e400',
    DEEP,
    BAN % '"reason": "\\ud800"',
    '[{"action": "ban", "ip": "\\ud800"}]',
]
# Valid JSON, refused command by command.
INVALID_BANS = [
    BAN % '"ttl_seconds": 1e12',
    BAN % '"ttl_seconds": 0.5',
    '[{"action": "ban", "ip": ["203.0.113.9"], "reason": {"a": [1]}}]',
    BAN % ('"reason": "' + "x" * 100_000 + '"'),
]
POISON_RULES = [
    RULE % ("p1", ', "ttl_seconds": NaN'),
    RULE % ("p2", ', "ttl_seconds": Infinity'),
    RULE % ("p3", ', "ttl_seconds": 1e12'),
    DEEP,
    RULE % ("\\ud800", ""),
    '[{"action": "add_rule", "rule": {"id": "p4", "action": "drop", "proto": ["udp"]}}]',
]
