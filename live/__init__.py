"""whalebt live: WebSocket runner, replay server and deployment."""
