"""What the dashboard shows, computed from results: metrics, cell galleries and their panels,
suspected label errors, two-model comparison."""

__all__: list[str] = []
