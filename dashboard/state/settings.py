"""Server settings from the command line: ``streamlit run dashboard/app.py -- --config F``."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_CONFIG", "ROOT", "Settings", "settings"]

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "sample_models" / "config.toml"


@dataclass(frozen=True)
class Settings:
    """Which project the server shows, and whether users may write tags and notes."""

    config: Path
    read_only: bool = False
    login: bool = False


def settings(argv: list[str] | None = None) -> Settings:
    """Parse the arguments after ``--``; ``CAM_DASHBOARD_CONFIG`` is the fallback (tests)."""
    parser = argparse.ArgumentParser(prog="streamlit run dashboard/app.py --")
    parser.add_argument("--config", type=Path, help="project config (TOML)")
    parser.add_argument("--read-only", action="store_true", help="hide tag and note editing")
    parser.add_argument(
        "--login", action="store_true", help="require st.login (OIDC in .streamlit/secrets.toml)"
    )
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    config = args.config or os.environ.get("CAM_DASHBOARD_CONFIG") or DEFAULT_CONFIG
    read_only = args.read_only or os.environ.get("CAM_DASHBOARD_READ_ONLY") == "1"
    return Settings(Path(config).expanduser().resolve(), read_only, args.login)
