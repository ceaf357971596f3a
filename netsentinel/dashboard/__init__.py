"""The Streamlit dashboard (entry point: dashboard.py at the checkout root).

One module per page (overview, events, review, bans, filter_rules, whitelist,
llm, auditlog), plus:
  settings  where records/ and filter_config.json are, refresh interval
  data      reading records/ for display: never moves a file, says what is wrong
  status    is the loader / analyzer alive, and when did each last write
  access    the login token, password hashes, the login rate limit (no Streamlit)
  auth      the sign-in gate on every address, sessions and their expiry
  ui        widgets and messages shared by the pages
  app       page layout, navigation and auto-refresh

Every read and write goes through netsentinel.store.RecordsStore; decisions
go through netsentinel.threats, bans are checked by netsentinel.bancheck.
"""
