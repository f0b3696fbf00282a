"""Re-export of :mod:`monai_cluster.utils.random_state` (its former home), for existing imports."""

from monai_cluster.utils.random_state import capture_random_states, random_sources, restore_random_states

__all__ = ["capture_random_states", "random_sources", "restore_random_states"]
