"""Pictures: tiles, grids, legends and label PNGs as uint8 arrays (tiles.py) and matplotlib plots (plots.py)."""
