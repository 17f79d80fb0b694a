"""Shared infrastructure below everything: settings, logging and the errors that cross layers."""
