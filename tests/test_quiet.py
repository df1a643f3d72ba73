"""vla_rl/base/quiet.py drops exactly the three known framework messages, emitted here by the libraries themselves."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from ray.rllib.core.rl_module.rl_module import RLModuleConfig
from ray.util.debug import reset_log_once
from transformers import PreTrainedModel

from vla_rl.base.quiet import (
    GRADIENT_CHECKPOINTING_DEPRECATION,
    RAY_DEPRECATION_LOGGER,
    RLMODULE_CONFIG_DEPRECATION,
    silence_framework_noise,
)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def ray_deprecation_records():
    logger = logging.getLogger(RAY_DEPRECATION_LOGGER)
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    yield logger, handler.messages
    logger.removeHandler(handler)
    logger.setLevel(level)


def _build_rlmodule_config() -> None:
    """What `RLModule.__init__` does in ray 2.60 (logged once per process, hence the reset)."""
    reset_log_once("RLModule(config=[RLModuleConfig object])")
    RLModuleConfig()


def test_rllib_rlmodule_config_deprecation_is_dropped_and_other_records_pass(ray_deprecation_records):
    logger, messages = ray_deprecation_records
    for f in list(logger.filters):  # start from ray's own behaviour (an earlier import may have silenced it)
        logger.removeFilter(f)
    _build_rlmodule_config()
    assert len(messages) == 1 and RLMODULE_CONFIG_DEPRECATION in messages[0], messages  # the exact text ray logs

    silence_framework_noise()
    silence_framework_noise()  # idempotent
    assert len(logger.filters) == 1
    _build_rlmodule_config()
    logger.warning("DeprecationWarning: `something else` has been deprecated.")
    assert len(messages) == 2 and "something else" in messages[1], messages


class _Model(torch.nn.Module):
    is_activation_checkpointing = False


def _read_is_gradient_checkpointing() -> None:
    """What peft's `PeftModel.__init__` does: read transformers' deprecated property."""
    PreTrainedModel.is_gradient_checkpointing.fget(_Model())


def test_transformers_gradient_checkpointing_warning_is_dropped_and_other_warnings_show():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # override pyproject's pytest filter of the same message
        _read_is_gradient_checkpointing()
        assert len(caught) == 1 and caught[0].category is FutureWarning  # the exact text transformers warns
        assert str(caught[0].message).startswith(GRADIENT_CHECKPOINTING_DEPRECATION)

        silence_framework_noise()
        caught.clear()
        _read_is_gradient_checkpointing()
        warnings.warn("`is_gradient_checkpointing` is deprecated", DeprecationWarning)  # another category
        warnings.warn("some other future change", FutureWarning)
        assert [(w.category, str(w.message)) for w in caught] == [
            (DeprecationWarning, "`is_gradient_checkpointing` is deprecated"),
            (FutureWarning, "some other future change")]


def test_rllib_new_api_stack_notice_is_dropped_and_other_config_records_pass():
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.util.debug import reset_log_once

    from vla_rl.base.quiet import NEW_API_STACK_NOTICE, RLLIB_CONFIG_LOGGER

    logger = logging.getLogger(RLLIB_CONFIG_LOGGER)
    handler, level, filters = _Records(), logger.level, list(logger.filters)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        for f in filters:  # start from ray's own behaviour
            logger.removeFilter(f)
        reset_log_once("PPO_on_new_api_stack")
        PPOConfig().validate()
        assert any(NEW_API_STACK_NOTICE in m for m in handler.messages), handler.messages  # the exact text ray logs
        handler.messages.clear()
        silence_framework_noise()
        reset_log_once("PPO_on_new_api_stack")
        PPOConfig().validate()
        logger.warning("another config warning")
        assert handler.messages == ["another config warning"], handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        for f in filters:
            logger.addFilter(f)
