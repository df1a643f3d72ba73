"""The RL system around the framework-agnostic `VLAPolicy`: PPO math (pure), the RLlib module,
learner, env stack, algorithm and checkpoints."""

from vla_rl.base.quiet import silence_framework_noise

# Every process that imports the RL system drops three known framework messages (vla_rl/base/quiet.py). Ray actors import
# this package when they unpickle the algorithm config (it names VLARLModule and the learner class), i.e. before RLlib
# builds its first module there: later would be too late for RLlib's once-per-process deprecation log.
silence_framework_noise()
