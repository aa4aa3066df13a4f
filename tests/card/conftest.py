"""Fixtures of the card tests."""

from __future__ import annotations

import re

import pytest
import yaml


@pytest.fixture(scope="session")
def header_of():
    """``header_of(card_text)``: the card's YAML front matter as a dict."""

    def parse(card: str) -> dict:
        match = re.match(r"---\n(.*?)\n---\n", card, re.S)
        assert match, "card has no YAML front matter"
        return yaml.safe_load(match.group(1))

    return parse
