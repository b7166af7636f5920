"""HTTP and WebSocket route handlers of the api."""
