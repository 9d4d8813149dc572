"""The observatory: one local, read-only web app over runs, sweeps, the lake and live runners (``bt ui``).

``observatory.app.make_app(Options(...))`` builds the aiohttp application; ``observatory.app.serve``
runs it. Views: :mod:`observatory.runs`, :mod:`observatory.sweeps`, :mod:`observatory.lake`,
:mod:`observatory.live`. See docs/observatory.md.
"""
