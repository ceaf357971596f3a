"""The `netsentinel` command: the loader and analyzer's state and decisions
for people and scripts, from a terminal (fail2ban-client / cscli style).

  main     parser and dispatch (status, bans, threats, whitelist)
  common   durations, tables, the store, one-line errors
  status   `netsentinel status`: health of every process, bans, threats
  bans     `netsentinel bans list|add|del`
  threats  `netsentinel threats list|show|approve|reject`
  unload   `netsentinel unload`: the loader's --unload, run as a process

It reads and writes records/ only through the shared floor (store, bancheck,
threats, whitelist): never the kernel, so it needs no root where the files
are readable, and the loader stays the only process touching the kernel.
"""
