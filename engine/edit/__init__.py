"""Edits of segmented regions: remove / replace with Stable Diffusion inpainting (diffusers, lazily)."""
