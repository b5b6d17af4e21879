"""privloc: learnable privacy-neuron localisation in language models.

A runnable companion to Chen, Hu, Feng & Liu, "Learnable Privacy Neurons Localization in Language
Models" (ACL 2024, arXiv 2405.10989).
"""

import os

# Nothing in the default path needs the network; without these, a missing path costs a ~20 s hub retry.
# Users of the real path (pretrained gpt2, hub datasets) set them to 0.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

__version__ = "0.1.0"
