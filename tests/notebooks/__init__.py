"""The notebooks under notebooks/ execute end to end."""
