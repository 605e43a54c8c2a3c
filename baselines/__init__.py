"""Baselines that are not objectives of our own trainer: LoRA merge methods (direct, ZipLoRA)."""
