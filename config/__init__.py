"""Configuration profiles (`<name>.env`), shipped as package data."""
