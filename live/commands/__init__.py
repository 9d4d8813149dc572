"""`live` subcommands, one module each (see ``datasets/_cli.py``)."""

GROUP_HELP = {"deploy": "render a deployment of the live runner (Azure Container Instances)"}
