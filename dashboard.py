#!/usr/bin/env python3
"""NetSentinel dashboard: watch and steer the loader and analyzer.

Reads and writes only records/ and filter_config.json, through the same
locked store as the other tools. Listens on 127.0.0.1:8501 (see
.streamlit/config.toml) and asks for its token (records/.dashboard_token or
NETSENTINEL_DASHBOARD_TOKEN; `make run` prints the login URL) or
NETSENTINEL_DASHBOARD_PASSWORD on every address.

Usage:
  streamlit run dashboard.py [-- --records DIR --config FILE --refresh SECONDS]
  python dashboard.py --help
See docs/DASHBOARD.md.
"""

import sys


def _under_streamlit() -> bool:
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx
    except ImportError:
        return False
    return get_script_run_ctx(suppress_warning=True) is not None


if _under_streamlit():
    from netsentinel.dashboard.app import main

    main()
elif __name__ == "__main__":
    from netsentinel.cliargs import EXIT_USAGE, die, quiet_on_closed_stdout
    from netsentinel.dashboard.settings import build_parser

    @quiet_on_closed_stdout
    def main() -> int:
        build_parser().parse_args()  # --help, --version, or a one-line usage error
        die("dashboard.py", "this is a Streamlit app: run `streamlit run dashboard.py` "
            "(or `make run`); see --help", EXIT_USAGE)

    sys.exit(main())
