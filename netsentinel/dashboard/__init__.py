"""The Streamlit dashboard (entry point: dashboard.py at the checkout root).

One module per page (overview, events, review, bans, trusted, llm), plus:
  settings  where records/ and filter_config.json are, refresh interval
  data      reading records/ for display: never moves a file, says what is wrong
  status    is the loader / analyzer alive, and when did each last write
  auth      the password gate when the dashboard is not on loopback
  ui        widgets and messages shared by the pages
  app       page layout, navigation and auto-refresh

Every read and write goes through netsentinel.store.RecordsStore; decisions
go through netsentinel.threats, bans are checked by netsentinel.bancheck.
"""
