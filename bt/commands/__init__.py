"""`bt` subcommands, one module each (see ``whalebt/cli.py``)."""
