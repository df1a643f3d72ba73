"""The RL system around the framework-agnostic `VLAPolicy`: PPO math (pure), the RLlib module,
learner, env stack, algorithm and checkpoints."""
