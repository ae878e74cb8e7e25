"""Tools for developing modelfolio, never part of what it deploys."""
