"""Helpers without a stage of their own: atomic outputs, structured-config loading with
one-line errors, the DDP gather contract, malloc reuse for the views."""
