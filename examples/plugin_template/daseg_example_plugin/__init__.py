"""An example da_seg plugin: one component of every kind, each in its own module (docs/plugins.md walks through
them); ``plugin.py`` holds the hook implementations that register them."""
