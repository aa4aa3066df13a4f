"""Fixtures of the card tests."""

from __future__ import annotations

import re

import pytest
import yaml


@pytest.fixture(scope="session")
def header_of():
    """``header_of(card_text)``: the card's YAML front matter as a dict."""
    return lambda card: yaml.safe_load(re.match(r"---\n(.*?)\n---\n", card, re.S).group(1))
