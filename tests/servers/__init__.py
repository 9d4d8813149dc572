"""Local servers that answer like the real exchanges, fed with real recorded data (tests only)."""
