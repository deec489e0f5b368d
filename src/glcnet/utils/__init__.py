"""Small helpers without a stage of their own: atomic outputs, the DDP gather contract, malloc."""
