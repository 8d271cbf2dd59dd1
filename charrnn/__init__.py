"""charrnn: character-level recurrent language models from the command line."""

import warnings

# torch warns at import when NumPy is absent; charrnn never needs NumPy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

__version__ = "0.1.0"
