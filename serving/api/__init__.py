"""shoprec's recommendation API: ``python -m serving.api`` or ``create_app(settings)``."""
