"""Small helpers shared across the bridge."""
