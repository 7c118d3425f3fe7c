"""Validation: measured runs compared with memsim's predictions."""
