"""whalebt backtester: event study, portfolio, reports, sweeps, registry and the `bt` CLI."""
