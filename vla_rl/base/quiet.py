"""Silence three framework messages that a normal run would otherwise print in the driver and in every Ray actor.

Both come from inside the installed libraries, not from how vla-rl calls them, and neither can be avoided by calling
the libraries differently:

- ray 2.60, `ray/rllib/core/rl_module/rl_module.py`: `RLModule.__init__` always builds the deprecated
  `RLModuleConfig` (kept for old custom modules), whose `@Deprecated` constructor logs, once per process, through the
  logger `ray._common.deprecation`: "DeprecationWarning: `RLModule(config=[RLModuleConfig object])` has been
  deprecated. ..." — even for modules built the new way (`RLModuleSpec(module_class=..., model_config=...)`, as
  vla_rl/rl/algorithm.py does).
- transformers 5, `transformers/modeling_utils.py` (`PreTrainedModel.is_gradient_checkpointing`): a `FutureWarning`
  "`is_gradient_checkpointing` is deprecated and will be removed in v6. ..." raised when peft's `PeftModel.__init__`
  reads that property, i.e. whenever LoRA is attached.
- ray 2.60, `ray/rllib/algorithms/algorithm_config.py` (`AlgorithmConfig.validate`): a WARNING on the logger
  `ray.rllib.algorithms.algorithm_config`, "You are running PPO on the new API stack! This is the new default
  behavior ...", logged for every algorithm on the new API stack — which vla-rl uses by design (RLModule + Learner).

`silence_framework_noise()` drops exactly these three (a logging filter on each of the two loggers matching its one
message, a warnings filter on the one message and category); every other warning and log record still shows. It is idempotent.
It runs at CLI start (vla_rl/cli.py) and in every process that imports the RL system (vla_rl/rl/__init__.py: Ray
actors import it when they unpickle the algorithm config, before RLlib builds any module), and again in
`VLARLModule.setup`. tests/test_quiet.py emits the messages from the libraries themselves, so a library that rewords
one fails there.
"""

from __future__ import annotations

import logging
import re
import warnings

RAY_DEPRECATION_LOGGER = "ray._common.deprecation"
RLMODULE_CONFIG_DEPRECATION = "`RLModule(config=[RLModuleConfig object])` has been deprecated"
GRADIENT_CHECKPOINTING_DEPRECATION = "`is_gradient_checkpointing` is deprecated"
RLLIB_CONFIG_LOGGER = "ray.rllib.algorithms.algorithm_config"
NEW_API_STACK_NOTICE = "on the new API stack! This is the new default behavior"


class _DropMessage(logging.Filter):
    """Drops the log records whose message contains `fragment`; passes every other record."""

    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


_RLMODULE_CONFIG_FILTER = _DropMessage(RLMODULE_CONFIG_DEPRECATION)
_NEW_API_STACK_FILTER = _DropMessage(NEW_API_STACK_NOTICE)


def silence_framework_noise() -> None:
    """Install the filters (see the module docstring) in this process."""
    logging.getLogger(RAY_DEPRECATION_LOGGER).addFilter(_RLMODULE_CONFIG_FILTER)  # addFilter ignores a repeat
    logging.getLogger(RLLIB_CONFIG_LOGGER).addFilter(_NEW_API_STACK_FILTER)
    warnings.filterwarnings("ignore", message=re.escape(GRADIENT_CHECKPOINTING_DEPRECATION), category=FutureWarning)
