"""privloc: learnable privacy-neuron localisation in language models."""
