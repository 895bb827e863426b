"""One module per cell: its config dataclass and its `CellEnv` subclass."""
