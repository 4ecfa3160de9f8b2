"""Pure DataFrame -> DataFrame transforms: no I/O, no config, no actions (see STYLE.md)."""
