"""The `imgbatch` command: the local stack and its supervisor, demo, API keys, and the client."""
