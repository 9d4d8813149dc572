"""What every whalebt package shares and nothing else: the error base and the CLI frame.

Standard library only; ``signals`` stays free of it (it raises plain ``ValueError`` for misuse),
``datasets``, ``bt`` and ``live`` import it.
"""
