"""The transformers release under test, and the few differences between supported releases
(``sdtp_adapter.compat``): each is checked against what the installed release really does."""

from __future__ import annotations

import os
from importlib.metadata import requires

import torch
import transformers
from packaging.requirements import Requirement
from packaging.version import Version
from torch.utils.flop_counter import FlopCounterMode
from transformers import DynamicCache

from conftest import random_ids, tiny_llama
from sdtp_adapter.compat import cache_kwarg, cache_of, mask_query_length, rope_table_flops


def declared_transformers() -> Requirement:
    """The ``transformers`` requirement of the installed package (pyproject.toml's, as pip resolved it)."""
    return next(Requirement(r) for r in requires("sdtp-adapter") if Requirement(r).name == "transformers")


def test_installed_transformers_is_in_the_declared_range_and_the_one_this_run_is_for():
    requirement = declared_transformers()
    installed = Version(transformers.__version__)
    assert installed in requirement.specifier, f"transformers {installed} is outside pyproject.toml's {requirement}"
    # `make test-lowest` sets SDTP_TRANSFORMERS to the release it installed: the run must really use it,
    # and it must be the floor pyproject.toml declares (so the floor is what CI tests)
    expected = os.environ.get("SDTP_TRANSFORMERS")
    if expected is not None:
        floors = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        assert installed == Version(expected), f"this run is for transformers {expected}, got {installed}"
        assert floors == [installed], f"pyproject.toml's floor {floors} is not the tested lowest release {installed}"


def test_a_cache_passed_back_by_the_compat_keyword_is_used():
    """A wrong keyword is not an error on every release (5.1-5.23 ignore ``cache=``): the cache must grow."""
    model = tiny_llama()
    with torch.no_grad():
        first = model(random_ids(10), use_cache=True)
        cache = cache_of(first)
        assert isinstance(cache, DynamicCache) and cache.get_seq_length() == 10
        model(random_ids(1, seed=1), **cache_kwarg(cache), use_cache=True)
    assert cache.get_seq_length() == 11


def test_mask_query_length_reads_either_argument_form():
    assert mask_query_length(7) == 7
    assert mask_query_length(torch.arange(3, 10)) == 7  # cache_position of a 7-token chunk after 3 cached


def test_rope_table_flops_are_exactly_what_the_rotary_module_costs():
    model, ids = tiny_llama(), random_ids(40)
    rotary = model.model.rotary_emb
    positions = torch.arange(40)[None]
    with FlopCounterMode(display=False) as alone, torch.no_grad():
        rotary(model.model.embed_tokens(ids), positions)
    with FlopCounterMode(display=False) as forward, torch.no_grad():
        model(ids)
    # the same on every release: the matmul of 5.1-5.18 (2 * head_dim / 2 * n) or nothing from 5.19 on
    assert rope_table_flops(forward.get_flop_counts()) == alone.get_total_flops()
    assert alone.get_total_flops() in (0, 16 * 40)
