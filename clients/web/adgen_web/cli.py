"""`adgen-web`: runs the Streamlit page headless, passing --port/--address and any other options through."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adgen_web.config import WebSettings

APP_PATH = Path(__file__).with_name("app.py")


def streamlit_args(argv: list[str], settings: WebSettings | None = None) -> list[str]:
    """The `streamlit run` command line for the app; unknown options go to Streamlit untouched."""
    settings = settings if settings is not None else WebSettings()
    parser = argparse.ArgumentParser(prog="adgen-web", description="Serve the AdGen web UI.")
    parser.add_argument("--port", type=int, default=8501, help="HTTP port of the page (default 8501).")
    parser.add_argument("--address", default="127.0.0.1", help="Address to bind (0.0.0.0 in containers).")
    known, passthrough = parser.parse_known_args(argv)
    return [
        "run",
        str(APP_PATH),
        "--server.headless=true",
        f"--server.port={known.port}",
        f"--server.address={known.address}",
        "--browser.gatherUsageStats=false",  # No calls home: the page runs offline.
        "--client.toolbarMode=viewer",  # Shop owners see no developer menu.
        # The orchestrator's photo limit, not Streamlit's 200 MB: the page never takes what the server refuses.
        f"--server.maxUploadSize={settings.max_photo_megabytes}",
        *passthrough,
    ]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: `adgen-web --port 8501` (target from ADGEN_WEB_TARGET); a bad ADGEN_WEB_* setting
    stops it at once with one line naming the variable, before Streamlit starts."""
    from streamlit.web import cli as streamlit_cli

    from adgen_runtime.settings import load_settings

    settings = load_settings(WebSettings)
    streamlit_cli.main(args=streamlit_args(sys.argv[1:] if argv is None else argv, settings), prog_name="streamlit")


if __name__ == "__main__":
    main()
