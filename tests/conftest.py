"""Fixtures shared by the masking, mitigation, baseline and localisation tests."""

import pytest
import torch
from helpers import tiny_corpus, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def enc():
    """A hand-labelled tiny corpus (helpers.tiny_corpus)."""
    return tiny_corpus()
