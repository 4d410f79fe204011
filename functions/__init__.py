"""NeuraStyle's HTTP function: `main` (the functions-framework target: routes), `parsing`
(request bodies), `presets` (the built-in styles), `settings` (the environment, read once),
`admission` (slots, the line, batches, the drain), `connection` (the client's socket),
`serving` (a request's life, the service) and `server` (what `nst-jax serve` runs)."""
