"""Model bundles: one `.mseg` file that holds a trained run's fold models, its preprocessing
contract, threshold and model card, verifiable member by member (README, "Sharing a model").
`archive` reads, verifies and unpacks bundles (used by inference, so it
imports only shared modules); `store` keeps installed bundles by name; `card` and `writer`
build a bundle from a run folder (`mammoseg export --bundle`)."""
