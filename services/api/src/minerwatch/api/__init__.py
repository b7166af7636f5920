"""minerwatch api: history HTTP API, live WebSocket relay of the MQTT topics, dashboard."""
