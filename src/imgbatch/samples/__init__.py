"""The demo's product sheet and the images its loopback origin serves (`imgbatch demo`)."""
