"""vla-rl: online RL fine-tuning of Vision-Language-Action robot policies.

Kept import-light: heavy parts (torch, ray, transformers) are imported by the modules that use them.
"""

__version__ = "0.1.0"
