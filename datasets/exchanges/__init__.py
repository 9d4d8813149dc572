"""One home per exchange: ``binance``, ``bybit``, ``okx`` (symbols, archive layout, REST, WebSocket).

Each module holds all that whalebt knows about one exchange's formats; ``datasets`` (ingest) and
``live`` (the runner's adapters) import from here. ``_common`` has the shared :class:`Trade` row.
Nothing is imported here, so that importing one exchange module stays cheap.
"""
