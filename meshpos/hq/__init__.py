"""HQ: the chain's central service. Stores relay their signed ops to it; it keeps chain-wide views,
settles offline card payments with the acquirer, and signs the ops (prices, catalogue, loyalty rules,
card blocklist, payment results) that flow back down to every store. See docs/hq-api.md.
"""
