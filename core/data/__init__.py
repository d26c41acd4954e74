"""What is analysed: test sets (files, labels, one read per image) and the trained models."""

__all__: list[str] = []
