"""Webhook subscribers, signed events and their delivery."""
