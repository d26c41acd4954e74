"""Where a model looked: class activation maps (Grad-CAM and relatives), their cache, overlays."""

__all__: list[str] = []
