"""Fixtures shared by the masking, mitigation and baseline tests."""

import pytest
import torch
from helpers import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(1))
