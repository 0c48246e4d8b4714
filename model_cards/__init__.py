"""Model card templates, shipped inside the package as `hf_interest.model_cards` (see pyproject.toml)."""
