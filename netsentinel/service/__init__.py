"""Running NetSentinel as a service.

  supervise  the pipeline supervisor: `unified_ebpf.py | llm_analyzer.py`,
             the analyzer restarted with backoff when it exits while the
             loader keeps enforcing (`make run` and netsentinel.service)
  sdnotify   systemd readiness (READY=1, STATUS=, STOPPING=1) over
             $NOTIFY_SOCKET, without a dependency

It starts the loader and analyzer as processes (their scripts), never imports
them: a wing over the shared floor like ctl/.
"""
