"""`live` subcommands, one module each (see ``whalebt/cli.py``)."""

GROUP_HELP = {"deploy": "render a deployment of the live runner (Azure Container Instances)"}
