"""Fixtures of the card tests."""

from __future__ import annotations

import re

import pytest
import yaml


def _header_of(card: str) -> dict:
    """The YAML front matter of a card, parsed."""
    match = re.match(r"---\n(.*?)\n---\n", card, re.S)
    assert match, "card has no YAML front matter"
    return yaml.safe_load(match.group(1))


@pytest.fixture(scope="session")
def header_of():
    """``header_of(card_text)``: the card's YAML front matter as a dict."""
    return _header_of
