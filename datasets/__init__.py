"""whalebt data: sources, the medallion lake, layer builds and synthetic markets."""
