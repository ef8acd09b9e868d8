"""trailerlinkctl: operate trailerlink through the services' HTTP admin APIs."""

__version__ = "0.1.0"
