"""NeuraStyle's HTTP function: `main` (the functions-framework target), `parsing` (request
bodies), `presets` (the built-in styles), `settings` (the environment, read once) and
`serving` (admission, deadlines, the drain, the server `nst-jax serve` runs)."""
