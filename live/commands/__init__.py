"""`live` subcommands, one module each (see ``datasets/_cli.py``)."""
