"""The pages of the UI, one module each."""
