"""The Feast repo users open (`feast -c feature_repo ...`); installed as cdp.feature_repo for its yaml files."""
