"""Persistence and shared domain types: settings, documents and the repositories that query them."""
