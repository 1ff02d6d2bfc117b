"""The command line: its arguments (arguments.py) and each command's settings built once from
them (settings.py). app.py runs the commands on those settings."""
from cli.arguments import build_parser
from cli.settings import settings_from

__all__ = ["build_parser", "settings_from"]
