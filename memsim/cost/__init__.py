"""Cost models: pure, numba-compiled functions that price ops on hardware described as rates."""
