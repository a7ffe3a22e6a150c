"""meshpos: a point of sale whose terminals keep selling when the internet is down."""

__version__ = "0.1.0"
