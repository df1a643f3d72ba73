"""The RL system: PPO math (pure), and — as the RL issue builds them — the RLlib module, learner,
env runners, algorithm and checkpoints around the framework-agnostic `VLAPolicy`."""
