"""`datasets` subcommands, one module each (see ``whalebt/cli.py``)."""

GROUP_HELP = {"ingest": "bring trades from a source into the lake (raw + bronze)"}
