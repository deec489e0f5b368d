"""Comparisons: the methods x fractions x seeds grid (``grid``), its tables (``table``), the demo."""
